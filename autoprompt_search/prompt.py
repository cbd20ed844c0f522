"""A complete prompt as found by a search: everything needed to apply it again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autoprompt_search.backends import DEFAULT_MAX_LENGTH
from autoprompt_search.calibration import Calibration
from autoprompt_search.templates import Template
from autoprompt_search.verbalizers import Verbalizer

ADAPTER_METHODS = ("lora", "prompt_tuning")


@dataclass(frozen=True)
class AdapterInfo:
    """A PEFT adapter folder trained on top of the model (LoRA weights or a soft prompt)."""

    method: str  # one of ADAPTER_METHODS
    path: str  # relative to the prompt file's folder
    sha256: str  # of its adapter_model.safetensors


@dataclass(frozen=True)
class ModelInfo:
    """Which model a prompt was found or trained on."""

    name: str  # registered name or folder as the user gave it
    kind: str
    weights_sha256: str
    path: str = ""  # a relative path is relative to the prompt file's folder
    max_length: int = DEFAULT_MAX_LENGTH
    adapter: AdapterInfo | None = None
    precision: str = "float32"  # the model's compute precision when the figures were measured (backends.PRECISIONS)


@dataclass(frozen=True)
class PromptSpec:
    """Template + verbalizer + calibration on one model, for a dataset's labels and fields."""

    template: Template
    verbalizer: dict[str, list[str]]
    labels: tuple[str, ...]
    fields: tuple[str, ...]
    calibration: Calibration = field(default_factory=Calibration)
    trigger_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.template, str):  # a template written by hand: parsed once, here
            object.__setattr__(self, "template", Template.parse(self.template, fields=self.fields))

    def parsed(self) -> tuple[Template, Verbalizer]:
        return self.template, Verbalizer.parse(self.verbalizer, self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["template"] = self.template.source
        data["labels"] = list(self.labels)
        data["fields"] = list(self.fields)
        data["trigger_ids"] = list(self.trigger_ids)
        data["calibration"] = self.calibration.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptSpec":
        calibration = data.get("calibration") or {}
        return cls(
            template=data["template"],
            verbalizer={label: list(words) for label, words in data["verbalizer"].items()},
            labels=tuple(data["labels"]),
            fields=tuple(data["fields"]),
            calibration=Calibration.from_dict(calibration),
            trigger_ids=tuple(data.get("trigger_ids", ())),
        )
