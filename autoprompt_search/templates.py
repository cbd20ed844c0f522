"""The template language: parse, validate and render prompts.

A template is literal text with three kinds of slots:

- ``{field}``: a text field of the example (``{text}``, ``{premise}``, ...);
- ``{mask}``: the label slot, exactly one, where the verbalizer's words are scored;
- ``[T]``: a trigger slot, filled with a searched token.

``{{`` and ``}}`` are literal braces, and ``{[}`` is a literal ``[``: a literal ``[T]`` is written
``{[}T]`` (:func:`escape` does this), so every ``[T]`` in a template is a trigger slot.

Rendering works on token ids: each piece is tokenized as it sits in the prompt (see
:mod:`tokenization`), and a long input is cut inside its field, never in the template's own
words or at the slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from autoprompt_search.errors import UserError
from autoprompt_search.tokenization import encode_in_context, encode_plain

SLOT = "mask"
TRIGGER = "[T]"
SegmentKind = Literal["literal", "field", "slot", "trigger"]
LITERAL_BRACKET = "{[}"  # a literal "[", to write a literal "[T]" as "{[}T]"
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{\[\}|\{([^{}]*)\}|\[T\]|[{}]")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def escape(text: str) -> str:
    """Text as a template's literal: braces doubled, each ``[T]`` written ``{[}T]``."""
    return text.replace("{", "{{").replace("}", "}}").replace(TRIGGER, LITERAL_BRACKET + TRIGGER[1:])


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    value: str = ""


@dataclass(frozen=True)
class Template:
    """A parsed template. Build it with :meth:`parse`."""

    source: str
    segments: tuple[Segment, ...] = field(repr=False)

    @classmethod
    def parse(cls, source: str, *, fields: Sequence[str] | None = None, origin: str = "template") -> "Template":
        """Parse and check ``source``; ``fields`` are the example's text fields, if known."""
        if not isinstance(source, str) or not source.strip():
            raise UserError(f"{origin}: the template is empty")
        segments: list[Segment] = []
        literal: list[str] = []
        position = 0

        def flush() -> None:
            text = "".join(literal)
            literal.clear()
            if text:
                segments.append(Segment("literal", text))

        for match in _TOKEN_RE.finditer(source):
            literal.append(source[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif token == LITERAL_BRACKET:
                literal.append("[")
            elif token in ("{", "}"):
                raise UserError(
                    f"{origin}: unmatched '{token}' at character {match.start() + 1} of {source!r} "
                    f"(write '{token * 2}' for a literal brace)"
                )
            elif token == TRIGGER:
                flush()
                segments.append(Segment("trigger"))
            else:
                name = match.group(1).strip()
                if not _FIELD_RE.match(name):
                    raise UserError(f"{origin}: '{token}' is not a valid slot name in {source!r}")
                flush()
                segments.append(Segment("slot") if name == SLOT else Segment("field", name))
        literal.append(source[position:])
        flush()
        template = cls(source, tuple(segments))
        template._check(origin, fields)
        return template

    def _check(self, origin: str, fields: Sequence[str] | None) -> None:
        slots = sum(segment.kind == "slot" for segment in self.segments)
        if slots == 0:
            raise UserError(f"{origin}: template {self.source!r} has no label slot {{mask}}")
        if slots > 1:
            raise UserError(f"{origin}: template {self.source!r} has {slots} label slots {{mask}}; exactly one is allowed")
        if not self.fields_used:
            raise UserError(f"{origin}: template {self.source!r} uses no field of the example (such as {{text}})")
        if fields is not None:
            unknown = [name for name in self.fields_used if name not in fields]
            if unknown:
                raise UserError(
                    f"{origin}: template {self.source!r} uses unknown field {{{unknown[0]}}}; the data has: {', '.join(fields)}"
                )

    def check_for_model(self, model_kind: str, origin: str = "template") -> None:
        """Causal models score the slot as the continuation, so it must come last."""
        if model_kind == "causal" and self.continues_after_slot():
            raise UserError(f"{origin}: for a causal model the slot {{mask}} must be last, but {self.source!r} continues after it")

    def continues_after_slot(self) -> bool:
        """Whether anything but whitespace (text, a field, a trigger) follows the slot."""
        index = self._slot_index()
        return any(s.kind != "literal" or s.value.strip() for s in self.segments[index + 1 :])

    @property
    def fields_used(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.value for s in self.segments if s.kind == "field"))

    @property
    def n_triggers(self) -> int:
        return sum(segment.kind == "trigger" for segment in self.segments)

    def text_after_slot(self) -> str:
        index = self._slot_index()
        return "".join(s.value for s in self.segments[index + 1 :] if s.kind == "literal")

    def slot_follows_space(self) -> bool:
        """Whether the slot's word is preceded by whitespace (decides its tokenization)."""
        return bool(self.whitespace_before(self._slot_index()))

    def whitespace_before(self, index: int) -> str:
        """The whitespace that ends the literal before segment ``index`` ("" if none): it belongs to
        what follows, as whole-text tokenization would have it (" " -> "Ġword", "\n" -> "Ċ word")."""
        previous = self.segments[index - 1] if index else None
        if previous is None or previous.kind != "literal":
            return ""
        return previous.value[len(previous.value.rstrip()) :]

    def whitespace_before_slot(self) -> str:
        return self.whitespace_before(self._slot_index())

    def _slot_index(self) -> int:
        return next(i for i, s in enumerate(self.segments) if s.kind == "slot")

    def with_text_before_slot(self, text: str) -> "Template":
        """This template with ``text`` written as literal text right before the slot (joined to the
        literal there, if any, and escaped as a whole: a "[" before the slot and "T]" make no trigger)."""
        segments = list(self.segments)
        index = self._slot_index()
        if text and index and segments[index - 1].kind == "literal":
            segments[index - 1] = Segment("literal", segments[index - 1].value + text)
        elif text:
            segments.insert(index, Segment("literal", text))
        written = {
            "literal": escape,
            "field": lambda name: "{" + name + "}",
            "trigger": lambda _: TRIGGER,
            "slot": lambda _: "{" + SLOT + "}",
        }
        return Template.parse("".join(written[s.kind](s.value) for s in segments))

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class RenderedPrompt:
    """Token ids around the slot, without special tokens; the backend assembles model inputs."""

    before: tuple[int, ...]
    after: tuple[int, ...]


class TemplateRenderer:
    """Renders one template for one tokenizer; literal pieces are tokenized once.

    Whitespace at the end of a literal belongs to what follows it, as whole-text tokenization
    would have it: a field after "Review: " is tokenized as " <text>", and the slot's words and
    trigger tokens carry their own leading-space marker, so the literal before them is stripped.
    """

    def __init__(self, template: Template, tokenizer: PreTrainedTokenizerBase, *, trigger_ids: Sequence[int] | None = None) -> None:
        if template.n_triggers and (trigger_ids is None or len(trigger_ids) != template.n_triggers):
            given = 0 if trigger_ids is None else len(trigger_ids)
            raise UserError(
                f"template {template.source!r} has {template.n_triggers} trigger slots [T] but {given} trigger tokens were given"
            )
        self.template = template
        self.tokenizer = tokenizer
        self.trigger_ids = tuple(trigger_ids or ())
        self._literal_ids = self._tokenize_literals()

    def _tokenize_literals(self) -> dict[int, list[int]]:
        segments = self.template.segments
        texts: dict[int, str] = {}
        for index, segment in enumerate(segments):
            if segment.kind != "literal":
                continue
            text = segment.value if index == len(segments) - 1 else segment.value.rstrip()
            if text:
                texts[index] = text
        result: dict[int, list[int]] = {}
        starts = [i for i in texts if i == 0]
        middles = [i for i in texts if i != 0]
        for index, ids in zip(starts, encode_plain(self.tokenizer, [texts[i] for i in starts])):
            result[index] = ids
        for index, ids in zip(middles, encode_in_context(self.tokenizer, [texts[i] for i in middles])):
            result[index] = ids
        return result

    def render(self, examples: Sequence[Mapping[str, str]], max_tokens: int) -> list[RenderedPrompt]:
        """Render examples (mappings field -> text) into at most ``max_tokens`` ids each.

        ``max_tokens`` excludes what the backend adds (special tokens, slot tokens). Fields are
        cut from their end, the longest first, so the template's own words are always kept.
        """
        segments = self.template.segments
        field_positions = [i for i, s in enumerate(segments) if s.kind == "field"]
        field_ids: dict[int, list[list[int]]] = {}
        for index in field_positions:
            name = segments[index].value
            texts = [_field_text(example, name) for example in examples]
            if index == 0:
                field_ids[index] = encode_plain(self.tokenizer, texts)
            else:
                space = self.template.whitespace_before(index)
                field_ids[index] = encode_in_context(self.tokenizer, [space + text for text in texts])
        fixed = sum(len(ids) for ids in self._literal_ids.values()) + len(self.trigger_ids)
        budget = max_tokens - fixed
        if budget < len(field_positions):
            raise UserError(
                f"template {self.template.source!r} needs {fixed} tokens of its own, more than the {max_tokens} the model allows"
            )
        slot = self.template._slot_index()
        rendered = []
        for row in range(len(examples)):
            lengths = _truncate_longest_first([len(field_ids[i][row]) for i in field_positions], budget)
            before: list[int] = []
            after: list[int] = []
            trigger = iter(self.trigger_ids)
            for index, segment in enumerate(segments):
                target = before if index < slot else after
                if segment.kind == "literal":
                    target.extend(self._literal_ids.get(index, ()))
                elif segment.kind == "field":
                    target.extend(field_ids[index][row][: lengths[field_positions.index(index)]])
                elif segment.kind == "trigger":
                    target.append(next(trigger))
            rendered.append(RenderedPrompt(tuple(before), tuple(after)))
        return rendered


def _field_text(example: Mapping[str, str], name: str) -> str:
    try:
        return example[name]
    except KeyError:
        raise UserError(f"the example has no field {name!r} (it has: {', '.join(example)})") from None


def _truncate_longest_first(lengths: list[int], budget: int) -> list[int]:
    """Shorten the longest lengths first until their sum fits the budget."""
    lengths = list(lengths)
    while sum(lengths) > budget:
        longest = max(range(len(lengths)), key=lambda i: lengths[i])
        excess = sum(lengths) - budget
        others = sorted((v for i, v in enumerate(lengths) if i != longest), reverse=True)
        floor = others[0] if others else 0
        lengths[longest] -= max(1, min(excess, lengths[longest] - floor))
    return lengths


def outline(source: str, demonstrations: Mapping[str, Any] | None) -> str:
    """How a leaderboard shows a template: one with demonstrations by its structure,
    ``[2 demonstrations, set 1] {text} In summary, this film is {mask}`` (``demonstrations``: the
    demonstration generator's record, which names each such template's base and set), any other
    template as it is."""
    if isinstance(demonstrations, Mapping):
        for template, base in zip(demonstrations.get("templates") or (), demonstrations.get("bases") or ()):
            if template == source and isinstance(base, Mapping):
                shown = base.get("shown")
                return f"[{shown} demonstration{'' if shown == 1 else 's'}, set {base.get('set')}] {base.get('base')}"
    return source

