"""A training run's checkpoint: after every epoch, the trainable parameters, the optimizer's state
and the best epoch's parameters (safetensors), and ``state.json`` naming them.

Files carry the epoch in their name and ``state.json`` is replaced last, atomically: a run killed at
any moment leaves the previous epoch's checkpoint whole, and older files are removed only after.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_json, read_json

STATE = "state.json"


@dataclass
class TrainingState:
    """Where training stands: the last finished epoch, its global step, the dev curve and the best epoch."""

    identity: dict[str, Any]
    epoch: int = -1  # the last finished epoch (0 is the untrained model's evaluation)
    step: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    files: dict[str, str] = field(default_factory=dict)  # role -> file name
    released: bool = False  # finished, its tensors deleted: nothing will read them (a refit follows)

    @property
    def best(self) -> dict[str, Any]:
        return next(row for row in self.curve if row["epoch"] == self.best_epoch)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(path.name + ".partial")
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(partial))
    os.replace(partial, path)


def link(source: Path, target: Path) -> None:
    """``target`` as a second name of ``source`` (files are never changed once written), or a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise UserError(f"{path}: the checkpoint file cannot be read ({error}); start again in a new output folder") from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The optimizer's state as named tensors plus its (JSON) parameter groups."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, values in state["state"].items() for name, value in values.items()}
    return tensors, [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in state["param_groups"]]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                                                                for g in groups]})


class Checkpoint:
    """The checkpoint folder of one training run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def saved_identity(self) -> dict[str, Any] | None:
        """The options the saved state was made with, or None when there is none."""
        path = self.folder / STATE
        return read_json(path, "training checkpoint state").get("identity", {}) if path.is_file() else None

    def read(self, identity: dict[str, Any]) -> TrainingState | None:
        """The saved state, or None when there is none; a user error when it was made with other options."""
        path = self.folder / STATE
        if not path.is_file():
            return None
        saved = read_json(path, "training checkpoint state")
        if saved.get("identity") != identity:
            changed = sorted(k for k in {**identity, **saved.get("identity", {})} if identity.get(k) != saved.get("identity", {}).get(k))
            raise UserError(f"{path}: the checkpoint was made with other settings ({', '.join(changed)}): resume with the same "
                            "options, or train into a new output folder", option="out")
        return TrainingState(**{k: saved[k] for k in asdict(TrainingState(identity)) if k in saved})

    def write(self, state: TrainingState, parameters: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
              best_changed: bool) -> None:
        """Save this epoch's parameters and optimizer (and the best parameters when they changed), then the state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = dict(state.files)
        tensors, groups = optimizer_tensors(optimizer)
        files = {"parameters": f"parameters-{state.epoch}.safetensors", "optimizer": f"optimizer-{state.epoch}.safetensors"}
        save_tensors(self.folder / files["parameters"], parameters)
        save_tensors(self.folder / files["optimizer"], tensors)
        if best_changed or "best" not in previous:
            files["best"] = f"best-{state.epoch}.safetensors"
            link(self.folder / files["parameters"], self.folder / files["best"])
        else:
            files["best"] = previous["best"]
        state.files = files
        atomic_write_json(self.folder / STATE, {**asdict(state), "param_groups": groups})
        for name in set(previous.values()) - set(files.values()):
            (self.folder / name).unlink(missing_ok=True)

    def restore(self, state: TrainingState, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
        """Put the saved parameters and optimizer state back."""
        copy_into(parameters, load_tensors(self.folder / state.files["parameters"]))
        groups = read_json(self.folder / STATE, "training checkpoint state")["param_groups"]
        restore_optimizer(optimizer, load_tensors(self.folder / state.files["optimizer"]), groups)

    def release(self, state: TrainingState) -> None:
        """Delete the finished run's tensors, keeping its state: a resumed run learns that this part
        is done without loading a model or reading gigabytes. The state is rewritten first; the
        tensor files go after it, all of them, so that a release cut off in between completes when
        called again on the resumed run."""
        state.files, state.released = {}, True
        atomic_write_json(self.folder / STATE, {**asdict(state), "param_groups": []})  # no optimizer left to restore
        for path in self.folder.glob("*.safetensors"):
            path.unlink(missing_ok=True)

    def best_parameters(self, state: TrainingState) -> dict[str, torch.Tensor]:
        return load_tensors(self.folder / state.files["best"])


def copy_into(parameters: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    """Overwrite ``parameters`` in place with saved ``values`` (same names and shapes)."""
    if set(parameters) != set(values):
        raise UserError("the checkpoint holds other parameters than this training run; train into a new output folder")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(values[name].to(parameter.device, parameter.dtype))
