"""The inventory of bad inputs (issue 19, part 4): each case is one thing a user can hand the command
line wrongly, and each is checked the same way: exit code 2 (130 for Ctrl-C), one error message on
stderr that names the file, field, option or line (a fragment of it is asserted), no traceback, and
nothing half-written (the case's folder, where every input and output of the case lives, is byte for
byte what it was before the command, unless the case says what may be left and checks it).

``CASES`` is the table; ``results/bad_inputs.md`` is generated from it and checked here against it
(``UPDATE_BAD_INPUT_TABLE=1 pytest tests/test_bad_inputs.py`` rewrites it). The CLI runs in this
process (``autoprompt_search.cli.main.main``) except for Ctrl-C, which needs a real signal.

Placeholders in arguments and message fragments: ``<dir>`` the case's own folder (also the working
folder), ``<causal>`` / ``<masked>`` the tiny causal and masked models, ``<finished>`` the folder of a
finished run (its space.yaml and data.csv; the run itself is ``<finished>/run``).
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from autoprompt_search import fileio, testing
from autoprompt_search.cli.main import main

TABLE = Path(__file__).resolve().parent.parent / "results" / "bad_inputs.md"
UPDATE_VARIABLE = "UPDATE_BAD_INPUT_TABLE"
VERBALIZER = '{"negative": ["bad"], "positive": ["good"]}'
TEMPLATE = "{text} It was {mask}"
ERROR_LINE = re.compile(r"(?:^|\r)autoprompt-search(?: [\w-]+)*: error: ", re.MULTILINE)  # after a progress bar's \r too


# -- the environment a case builds its inputs in ---------------------------------------------------
@dataclass(frozen=True)
class Env:
    dir: Path  # the case's own folder, also the working folder
    causal: Path  # a tiny causal LM (byte-level BPE)
    masked: Path  # a tiny masked LM (WordPiece)
    run: Path  # a finished search run (never changed: cases copy it)

    def expand(self, text: str) -> str:
        for name, value in (("dir", self.dir), ("causal", self.causal), ("masked", self.masked), ("finished", self.run.parent)):
            text = text.replace(f"<{name}>", str(value))
        return text


Build = Callable[[Env], None]


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    description: str
    build: Build | None  # writes the case's inputs into env.dir
    args: tuple[str, ...] | None  # the command line; None: a separate test below runs it (SEPARATE)
    expect: str  # a fragment of the one error message
    exit_code: int = 2
    patch: Callable[[pytest.MonkeyPatch], None] | None = field(default=None, repr=False)  # a fault injected in-process


# -- builders ---------------------------------------------------------------------------------------
def _nothing(env: Env) -> None:
    pass


def write(name: str, content: str | bytes) -> Build:
    """One file in the case folder (``<causal>`` etc. expanded in text)."""
    def build(env: Env) -> None:
        path = env.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(env.expand(content), encoding="utf-8")
    return build


def data(name: str = "data.csv") -> Build:
    """The tiny labelled CSV (40 rows, two labels) as ``name``."""
    def build(env: Env) -> None:
        testing.write_tiny_dataset(env.dir / name)
    return build


def both(*builds: Build) -> Build:
    def build(env: Env) -> None:
        for step in builds:
            step(env)
    return build


DELETE = object()


def good_space(model: Path) -> dict[str, Any]:
    """A search space over data.csv that searches in seconds."""
    return {
        "name": "tiny",
        "dataset": {"path": "data.csv", "text_fields": ["text"], "label_field": "label", "labels": ["negative", "positive"],
                    "test_fraction": 0.3},
        "model": str(model),
        "few_shot": {"k": 2, "seeds": [13, 21]},
        "templates": {"seeds": ["{text} It was {mask}", "{text} Overall it was {mask}"], "max_candidates": 4},
        "verbalizers": {"seeds": [{"negative": ["bad"], "positive": ["good"]}, {"negative": ["terrible"], "positive": ["great"]}]},
        "generators": {"label_words": {"enabled": False}},
        "calibration": ["none", "prior"],
        "budget": {"trials": 1},
        "pruner": {"type": "none", "chunks": 1},
        "ensemble": {"size": 1},
    }


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: dotted keys reach into sections, DELETE removes a key."""
    result = json.loads(json.dumps(base))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        section = result
        for key in parents:
            section = section.setdefault(key, {})
        if value is DELETE:
            section.pop(last, None)
        else:
            section[last] = value
    return result


def space(changes: dict[str, Any] | None = None, *, with_data: bool = True) -> Build:
    """The good space with ``changes`` (see :func:`_changed`), and the tiny data beside it."""
    def build(env: Env) -> None:
        if with_data:
            data()(env)
        text = yaml.safe_dump(_changed(good_space(env.causal), changes or {}), sort_keys=False)
        (env.dir / "space.yaml").write_text(env.expand(text), encoding="utf-8")
    return build


def model_copy(change: Callable[[Path], None]) -> Build:
    """A copy of the tiny causal model as ``<dir>/model``, changed by ``change(folder)``."""
    def build(env: Env) -> None:
        folder = env.dir / "model"
        shutil.copytree(env.causal, folder)
        change(folder)
    return build


def _remove(*names: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()
    return change


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickled weights")


def _config(**changes: Any) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return change


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[:keep])
    return change


def _perturbed_weights(folder: Path) -> None:
    """The same architecture and tokenizer, other weights (a model changed since the search)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def run_copy(change: Callable[[dict[str, Any], Env], Any] | None = None, file: str = "best.json") -> Build:
    """A copy of the finished run as ``<dir>/run``, its ``file`` (JSON) changed by ``change(document, env)``
    (which edits the document in place, or returns text to write instead)."""
    def build(env: Env) -> None:
        shutil.copytree(env.run, env.dir / "run")
        if change is not None:
            path = env.dir / "run" / file
            document = json.loads(path.read_text())
            text = change(document, env)
            path.write_text(text if isinstance(text, str) else json.dumps(document, indent=2))
    return build


def second_run(change: Callable[[dict[str, Any]], None]) -> Build:
    """A copy of the finished run as ``<dir>/run``, and another as ``<dir>/run2`` whose manifest is changed by ``change``."""
    def build(env: Env) -> None:
        run_copy()(env)
        shutil.copytree(env.run, env.dir / "run2")
        path = env.dir / "run2" / "manifest.json"
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document, indent=2))
    return build


def _other_test_sample(manifest: dict[str, Any]) -> None:
    manifest["dataset"]["splits"]["test"]["content_hash"] = "0" * 64


def _set_model(folder: str) -> Callable[[dict[str, Any], Env], None]:
    def change(document: dict[str, Any], env: Env) -> None:
        document["model"]["path"] = document["model"]["name"] = str(env.dir / folder)
    return change


def _disk_full_at(name: str) -> Callable[[pytest.MonkeyPatch], None]:
    """The atomic writer's fsync reports a full disk for temporary files of ``name``, as a kernel does
    when the data cannot be allocated; every other write goes through."""
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        real = os.fsync

        def fsync(fd: int) -> None:
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(fileio.os, "fsync", fsync)
    return patch


# -- argument lists -------------------------------------------------------------------------------
def evaluate(*extra: str, dataset: str = "<dir>/data.csv", model: str = "<causal>", template: str | None = TEMPLATE,
             verbalizer: str | None = VERBALIZER) -> tuple[str, ...]:
    prompt = (("--template", template) if template is not None else ()) + (("--verbalizer", verbalizer) if verbalizer is not None else ())
    return ("evaluate", "--dataset", dataset, "--model", model, "--no-cache", "--split", "all", *prompt, *extra)


def search(*extra: str, space_file: str = "<dir>/space.yaml", out: str = "<dir>/run") -> tuple[str, ...]:
    return ("search", space_file, "--no-cache", "--out", out, *extra)


def validate(file: str = "<dir>/space.yaml") -> tuple[str, ...]:
    return ("validate", file)


def train(source: str = "<dir>/run/best.json") -> tuple[str, ...]:
    return ("train", source, "--out", "<dir>/trained", "--epochs", "1", "--device", "cpu")


CSV_HEADER = "label,text\n"
TEN_MB = 10 * 2**20

CASES: list[Case] = [
    # -- search spaces --------------------------------------------------------------------------
    Case("space-unknown-key", "search space", "an unknown key (a typo)",
         space({"few_shots": {"k": 2}}), validate(), "space.yaml: few_shots: unknown key (did you mean 'few_shot'?"),
    Case("space-unknown-nested-key", "search space", "an unknown key inside a section",
         space({"budget.trails": 3}), validate(), "space.yaml: budget.trails: unknown key (did you mean 'trials'?"),
    Case("space-wrong-type-int", "search space", "a number given as text",
         space({"few_shot.k": "four"}), validate(), "space.yaml: few_shot.k must be an integer, got 'four'"),
    Case("space-wrong-type-section", "search space", "a section given as a scalar",
         space({"budget": 10}), validate(), "space.yaml: budget must be a mapping, got 10"),
    Case("space-wrong-type-bool", "search space", "a yes/no flag given as text",
         space({"generators.label_words.enabled": "maybe"}), validate(), "generators.label_words.enabled must be true or false"),
    Case("space-include-cycle", "search space", "files that include each other",
         both(space({"include": "other.yaml"}), write("other.yaml", "include: space.yaml\n")), validate(),
         "include cycle: <dir>/space.yaml -> <dir>/other.yaml -> <dir>/space.yaml"),
    Case("space-include-self", "search space", "a file that includes itself",
         space({"include": "space.yaml"}), validate(), "space.yaml: include: include cycle"),
    Case("space-missing-include", "search space", "an include that does not exist",
         space({"include": "nope.yaml"}), validate(), "space.yaml: include: <dir>/nope.yaml: no such file"),
    Case("space-yaml-syntax", "search space", "a YAML syntax error",
         write("space.yaml", "name: tiny\nbudget: {trials: 3\nmodel: x\n"), validate(), "space.yaml: line 3, column 6: invalid YAML"),
    Case("space-unquoted-template", "search space", "a template not in quotes (YAML reads {...} as a mapping)",
         both(data(), write("space.yaml", "dataset: {path: data.csv}\nmodel: <causal>\ntemplates:\n  seeds:\n    - {text} It was {mask}\n"
                                          "verbalizers: {seeds: [{negative: bad, positive: good}]}\nbudget: {trials: 1}\n")),
         validate(), "put templates in quotes"),
    Case("space-not-a-mapping", "search space", "a YAML list instead of a mapping",
         write("space.yaml", "- dataset\n- templates\n"), validate(), "space.yaml: expected a mapping of keys"),
    Case("space-empty", "search space", "an empty file",
         write("space.yaml", "# nothing yet\n"), validate(), "space.yaml: the file is empty"),
    Case("space-duplicate-key", "search space", "a key given twice",
         write("space.yaml", "name: a\nbudget: {trials: 1}\nname: b\n"), validate(),
         "space.yaml: line 3: duplicate key 'name' (first at line 1)"),
    Case("space-not-utf8", "search space", "a file in Latin-1",
         write("space.yaml", "name: caf\xe9\n".encode("latin-1")), validate(), "space.yaml: not UTF-8 text"),
    Case("space-no-such-file", "search space", "a space file that does not exist",
         None, validate("<dir>/nope.yaml"), "<dir>/nope.yaml: no such file"),
    Case("space-unknown-bundled", "search space", "a bundled space name that does not exist",
         None, validate("mr_fluid"), "mr_fluid: no such file, nor a bundled search space (bundled: "),
    Case("space-yes-as-label", "search space", "an unquoted yes/no label word (YAML reads a boolean)",
         space({"verbalizers.seeds": [{"negative": [False], "positive": ["good"]}]}), validate(),
         "verbalizers.seeds[0] has False, which YAML read from an unquoted yes/no"),
    Case("space-trials-zero", "search space", "budget.trials 0",
         space({"budget.trials": 0}), validate(), "space.yaml: budget.trials must be at least 1, got 0"),
    Case("space-unknown-calibration", "search space", "an unknown calibration method",
         space({"calibration": ["none", "platt"]}), validate(), "space.yaml: calibration[1] must be one of"),
    Case("space-unknown-pruner", "search space", "an unknown pruner",
         space({"pruner.type": "medain"}), validate(), "space.yaml: pruner.type must be one of median, wilcoxon, none, got 'medain' "
                                                       "(did you mean 'median'?)"),
    Case("space-no-dataset", "search space", "no dataset section",
         space({"dataset": DELETE}), validate(), "space.yaml: dataset is required"),
    Case("space-unknown-dataset", "search space", "an unknown registered dataset name",
         space({"dataset": "imbd"}), validate(), "space.yaml: dataset 'imbd' is not a registered dataset"),
    Case("space-dataset-file-missing", "search space", "a dataset path that does not exist",
         space({"dataset.path": "reviews.csv"}, with_data=False), validate(), "space.yaml: dataset.path 'reviews.csv': no such file"),
    Case("space-model-missing", "search space", "a model folder that does not exist",
         space({"model": "models/tiny"}), validate(), "space.yaml: model 'models/tiny' is neither a registered model"),
    Case("space-max-length-small", "search space", "max_length below the least a prompt needs",
         space({"max_length": 8}), validate(), "space.yaml: max_length must be at least 16, got 8"),
    Case("space-test-fraction", "search space", "a test fraction outside (0, 1)",
         space({"dataset.test_fraction": 1.5}), validate(), "space.yaml: dataset.test_fraction must be a number between 0 and 1"),
    Case("space-k-too-large", "search space", "K larger than the data holds",
         space({"few_shot.k": 50}), validate(),
         "<dir>/data.csv: label 'negative' has 13 examples in the train pool; K=50 (few_shot.k) needs 100"),
    Case("space-seed-absurd", "search space", "a few-shot seed beyond what the samplers take",
         space({"few_shot.seeds": [13, 2**40]}), validate(), "space.yaml: few_shot.seeds[1] must be at most 4294967295"),
    Case("space-labels-one", "search space", "dataset.labels with one label",
         space({"dataset.labels": ["positive"]}), validate(), "space.yaml: dataset.labels must list at least two distinct labels"),
    # -- data files -------------------------------------------------------------------------------
    Case("data-empty", "data file", "an empty file",
         write("data.csv", ""), evaluate(), "<dir>/data.csv: empty file"),
    Case("data-header-only", "data file", "a header and no rows",
         write("data.csv", CSV_HEADER), evaluate(), "<dir>/data.csv: no examples with text in field(s) text"),
    Case("data-one-label", "data file", "every row with the same label",
         write("data.csv", CSV_HEADER + "".join(f"positive,good film number {i}\n" for i in range(20))),
         evaluate(verbalizer='{"positive": ["good"]}'),
         "<dir>/data.csv: every example has the label 'positive' in field 'label'"),
    Case("data-undecodable", "data file", "bytes that are not UTF-8 (Latin-1)",
         write("data.csv", (CSV_HEADER + "positive,good\nnegative,caf\xe9 was bad\n").encode("latin-1")), evaluate(),
         "<dir>/data.csv: line 3 is not valid UTF-8 (byte 0xe9)"),
    Case("data-utf16-bom", "data file", "a UTF-16 file (with its byte-order mark)",
         write("data.csv", (CSV_HEADER + "positive,good\nnegative,bad\n").encode("utf-16")), evaluate(),
         "<dir>/data.csv: UTF-16 text (it starts with a UTF-16 byte-order mark)"),
    Case("data-ragged-row", "data file", "a row with more columns than the header",
         write("data.csv", CSV_HEADER + "positive,good film\nnegative,bad,film\n"), evaluate(),
         "<dir>/data.csv: line 3: 3 columns, but the header has 2 (label, text)"),
    Case("data-missing-column", "data file", "no column the --text-field names",
         write("data.csv", "label,review\npositive,good\nnegative,bad\n"), evaluate(),
         "<dir>/data.csv: no column 'text'; columns are: label, review"),
    Case("data-missing-label-column", "data file", "no column the --label-field names",
         data(), evaluate("--label-field", "sentiment"), "<dir>/data.csv: no column 'sentiment'"),
    Case("data-label-outside", "data file", "a label outside --labels",
         write("data.csv", CSV_HEADER + "positive,good\nnegative,bad\nneutral,fine\n"), evaluate("--labels", "negative,positive"),
         "<dir>/data.csv: line 4: label 'neutral' is not one of negative, positive"),
    Case("data-label-outside-space", "data file", "a label outside the space's dataset.labels",
         both(space(), write("data.csv", CSV_HEADER + "positive,good\nnegative,bad\nmixed,so-so\n")), validate(),
         "<dir>/data.csv: line 4: label 'mixed' is not one of negative, positive"),
    Case("data-conflicting-duplicates", "data file", "one text given twice with different labels",
         write("data.csv", CSV_HEADER + "positive,A fine film.\nnegative,a dull film\nnegative,A  fine film.\n"), evaluate(),
         "<dir>/data.csv: line 4: the same text as line 2 with another label"),
    Case("data-10mb-line", "data file", "a 10 MB line",
         write("data.csv", CSV_HEADER + "positive,good\nnegative," + "a" * TEN_MB + "\n"), evaluate(),
         "<dir>/data.csv: line 3: malformed CSV (field larger than field limit"),
    Case("data-duplicate-column", "data file", "a header naming one column twice",
         write("data.csv", "label,text,text\npositive,good,fine\nnegative,bad,poor\n"), evaluate(),
         "<dir>/data.csv: line 1: the header names the column 'text' twice"),
    Case("data-validate-empty", "data file", "validate a space whose data file is empty",
         both(space(), write("data.csv", "")), validate(), "<dir>/data.csv: empty file"),
    Case("data-search-header-only", "data file", "search on a header-only file (no run folder is left behind)",
         both(space(), write("data.csv", CSV_HEADER)), search(), "<dir>/data.csv: no examples with text"),
    Case("data-empty-label", "data file", "a row with an empty label",
         write("data.csv", CSV_HEADER + "positive,good\n,bad\n"), evaluate(), "<dir>/data.csv: line 3: empty label in field 'label'"),
    Case("data-unclosed-quote", "data file", "a quote that is never closed",
         write("data.csv", CSV_HEADER + 'positive,"good film\nnegative,bad\n'), evaluate(), "<dir>/data.csv: line 2"),
    Case("data-jsonl-bad-line", "data file", "a JSONL line that is not JSON",
         write("data.jsonl", '{"text": "good", "label": "positive"}\n{"text": "bad", "label": negative}\n'),
         evaluate(dataset="<dir>/data.jsonl"), "<dir>/data.jsonl: invalid JSON on line 2"),
    Case("data-jsonl-not-object", "data file", "a JSONL line that is a list",
         write("data.jsonl", '{"text": "good", "label": "positive"}\n["bad", "negative"]\n'),
         evaluate(dataset="<dir>/data.jsonl"), "<dir>/data.jsonl: line 2: expected a JSON object, found list"),
    Case("data-jsonl-nested-text", "data file", "a text field that is an object",
         write("data.jsonl", '{"text": "good", "label": "positive"}\n{"text": {"body": "bad"}, "label": "negative"}\n'),
         evaluate(dataset="<dir>/data.jsonl"), "<dir>/data.jsonl: line 2: field 'text' must be a string, found dict"),
    Case("data-json-not-list", "data file", "a JSON file holding an object, not a list",
         write("data.json", '{"text": "good", "label": "positive"}'), evaluate(dataset="<dir>/data.json"),
         "<dir>/data.json: expected a JSON list of objects, found dict"),
    Case("data-unknown-extension", "data file", "a data file with an unknown extension",
         write("data.txt", "positive good\n"), evaluate(dataset="<dir>/data.txt"), "<dir>/data.txt: unknown extension '.txt'"),
    Case("data-no-such-file", "data file", "a data file that does not exist",
         None, evaluate(dataset="<dir>/reviews.csv"), "<dir>/reviews.csv: no such file"),
    Case("data-unknown-dataset", "data file", "an unknown dataset name",
         None, evaluate(dataset="imdb"), "unknown dataset 'imdb': not a registered name"),
    # -- templates -----------------------------------------------------------------------------------
    Case("template-no-slot", "template", "no label slot {mask}",
         data(), evaluate(template="{text} It was great."), "template '{text} It was great.' has no label slot {mask}"),
    Case("template-two-slots", "template", "two label slots",
         data(), evaluate(template="{text} {mask} or {mask}"), "has 2 label slots {mask}; exactly one is allowed"),
    Case("template-slot-not-last", "template", "text after the slot, for a causal model",
         data(), evaluate(template="{text} It was {mask}!"), "for a causal model the slot {mask} must be last"),
    Case("template-unknown-field", "template", "a field the data does not have",
         data(), evaluate(template="{review} It was {mask}"), "uses unknown field {review}; the data has: text"),
    Case("template-unbalanced-open", "template", "an unclosed brace",
         data(), evaluate(template="{text It was {mask}"), "template: unmatched '{' at character 1 of '{text It was {mask}'"),
    Case("template-unbalanced-close", "template", "a stray closing brace",
         data(), evaluate(template="{text} It was} {mask}"), "template: unmatched '}' at character 14"),
    Case("template-no-field", "template", "no field of the example",
         data(), evaluate(template="It was {mask}"), "uses no field of the example"),
    Case("template-empty", "template", "an empty template",
         data(), evaluate(template="  "), "template: the template is empty"),
    Case("template-space-seed", "template", "a bad template in a space file, named by its place",
         space({"templates.seeds": ["{text} It was {mask}", "{review} It was {mask}"]}), validate(),
         "space.yaml: templates.seeds[1]: template '{review} It was {mask}' uses unknown field {review}"),
    # -- verbalizers ------------------------------------------------------------------------------------
    Case("verbalizer-empty-tokens", "verbalizer", "a word the tokenizer turns into no tokens (a zero-width space)",
         data(), evaluate(model="<masked>", template="{text} It was {mask}.", verbalizer='{"negative": ["\\u200b"], "positive": ["good"]}'),
         "verbalizer: word '\\u200b' of label 'negative' gives no tokens with this model's tokenizer"),
    Case("verbalizer-unknown-word", "verbalizer", "a word unknown to the tokenizer",
         data(), evaluate(model="<masked>", template="{text} It was {mask}.", verbalizer='{"negative": ["\\u65e5"], "positive": ["good"]}'),
         "verbalizer: word '\u65e5' of label 'negative' is unknown to this model's tokenizer"),
    Case("verbalizer-space-empty-tokens", "verbalizer", "a seed word of a space that gives no tokens, named by its place",
         space({"model": "<masked>", "verbalizers.seeds": [{"negative": ["bad"], "positive": ["good"]},
                                                           {"negative": ["\u200b"], "positive": ["great"]}]}),
         search(), "space.yaml: verbalizers.seeds[1]: word '\\u200b' of label 'negative' gives no tokens"),
    Case("verbalizer-word-in-two-labels", "verbalizer", "one word for two labels",
         data(), evaluate(verbalizer='{"negative": ["bad", "fine"], "positive": ["good", "Fine"]}'),
         "verbalizer: word 'Fine' is given for both 'negative' and 'positive'"),
    Case("verbalizer-empty", "verbalizer", "an empty mapping",
         data(), evaluate(verbalizer="{}"), "verbalizer: expected a mapping from each label to its words"),
    Case("verbalizer-empty-words", "verbalizer", "a label with no words",
         data(), evaluate(verbalizer='{"negative": [], "positive": ["good"]}'), "verbalizer: label 'negative' needs a non-empty word"),
    Case("verbalizer-not-json", "verbalizer", "not JSON",
         data(), evaluate(verbalizer="{negative: bad, positive: good}"), "verbalizer: not valid JSON"),
    Case("verbalizer-unknown-label", "verbalizer", "a label the data does not have",
         data(), evaluate(verbalizer='{"negative": ["bad"], "happy": ["good"]}'), "verbalizer: unknown label 'happy'"),
    Case("verbalizer-missing-label", "verbalizer", "a label of the data without words",
         data(), evaluate(verbalizer='{"negative": ["bad"]}'), "verbalizer: no words for label 'positive'"),
    Case("verbalizer-space-seed", "verbalizer", "a verbalizer in a space file with a label outside dataset.labels",
         space({"verbalizers.seeds": [{"negative": ["bad"], "postive": ["good"]}]}), validate(),
         "space.yaml: verbalizers.seeds[0]: unknown label 'postive'"),
    # -- model folders ------------------------------------------------------------------------------------
    Case("model-no-config", "model folder", "no config.json",
         both(data(), model_copy(_remove("config.json"))), evaluate(model="<dir>/model"), "model folder <dir>/model has no config.json"),
    Case("model-pickle-only", "model folder", "pickled weights only (pytorch_model.bin)",
         both(data(), model_copy(_pickle_only)), evaluate(model="<dir>/model"),
         "model folder <dir>/model has only pickled weights (pytorch_model.bin)"),
    Case("model-no-tokenizer", "model folder", "no tokenizer files",
         both(data(), model_copy(_remove("tokenizer.json", "tokenizer_config.json"))), evaluate(model="<dir>/model"),
         "model folder <dir>/model has no tokenizer file"),
    Case("model-unsupported-architecture", "model folder", "an architecture that is not a language model (ResNet)",
         both(data(), model_copy(_config(model_type="resnet", architectures=["ResNetForImageClassification"]))),
         evaluate(model="<dir>/model"), "model folder <dir>/model: its model type 'resnet' cannot be loaded as a causal language model; "
         "it is not a masked, causal or seq2seq language model"),
    Case("model-unknown-model-type", "model folder", "a model_type transformers does not know",
         both(data(), model_copy(_config(model_type="tinyllama-9000"))), evaluate(model="<dir>/model"),
         "model folder <dir>/model: cannot read its config.json"),
    Case("model-config-not-json", "model folder", "a config.json that is not JSON",
         both(data(), model_copy(lambda folder: (folder / "config.json").write_text("{\"model_type\": "))),
         evaluate(model="<dir>/model"), "model folder <dir>/model: cannot read its config.json"),
    Case("model-truncated-weights", "model folder", "a truncated model.safetensors",
         both(data(), model_copy(_truncate("model.safetensors", 1000))), evaluate(model="<dir>/model"),
         "model folder <dir>/model: cannot load it"),
    Case("model-path-is-file", "model folder", "a file where the model folder should be",
         both(data(), write("model.safetensors", b"\0")), evaluate(model="<dir>/model.safetensors"),
         "model path <dir>/model.safetensors is a file"),
    Case("model-unknown-name", "model folder", "an unknown model name",
         data(), evaluate(model="smollm3-135m"), "unknown model 'smollm3-135m'"),
    # -- exported JSON (best.json through train, which reads and checks it) --------------------------------
    Case("export-truncated", "exported JSON", "a truncated best.json",
         run_copy(lambda document, env: json.dumps(document)[:200]), train(), "<dir>/run/best.json: not valid JSON"),
    Case("export-not-object", "exported JSON", "a best.json holding a list",
         run_copy(lambda document, env: "[1, 2]"), train(), "<dir>/run/best.json: expected a JSON object at the top level"),
    Case("export-tampered-template", "exported JSON", "a tampered template (slot removed)",
         run_copy(lambda document, env: document["prompt"].update(template="{text} It was great")), train(),
         "<dir>/run/best.json: prompt.template: template '{text} It was great' has no label slot"),
    Case("export-tampered-splits", "exported JSON", "tampered data hashes (the file from another run)",
         run_copy(lambda document, env: document["dataset"]["splits"]["train"].update(content_hash="0" * 64)), train(),
         "<dir>/run/best.json: its dataset splits differ from the ones of the run folder"),
    Case("export-tampered-calibration", "exported JSON", "a calibration bias of the wrong length",
         run_copy(lambda document, env: document["prompt"].update(calibration={"method": "prior", "bias": [0.5]})), train(),
         "<dir>/run/best.json: prompt.calibration.bias: expected 2 numbers"),
    Case("export-newer-version", "exported JSON", "a format version newer than this autoprompt_search reads",
         run_copy(lambda document, env: document.update(format_version=99)), train(),
         "<dir>/run/best.json: format_version: the file has version 99"),
    Case("export-wrong-format", "exported JSON", "another tool's JSON (format field)",
         run_copy(lambda document, env: document.update(format="openprompt")), train(),
         "<dir>/run/best.json: format: expected 'autoprompt_search.prompt'"),
    Case("export-model-hash-mismatch", "exported JSON", "a model whose weights changed since the search",
         both(run_copy(_set_model("model")), model_copy(_perturbed_weights)), train(),
         "<dir>/run/best.json: model: the weights of <dir>/model differ from the ones the search used"),
    Case("export-model-missing", "exported JSON", "the model the prompt was found on is gone",
         run_copy(_set_model("gone")), train(), "<dir>/run/best.json: model: the model the prompt was found on is not available"),
    Case("export-outside-run", "exported JSON", "a prompt file outside its run folder",
         lambda env: shutil.copy(env.run / "best.json", env.dir / "best.json"), train("<dir>/best.json"),
         "<dir>/best.json: does not sit in its run folder"),
    Case("report-not-a-run", "exported JSON", "report on a folder that is not a run",
         write("empty/readme.txt", "x"), ("report", "<dir>/empty"), "<dir>/empty: not a finished search run"),
    Case("report-damaged-manifest", "exported JSON", "report on a run whose manifest.json is damaged",
         run_copy(lambda document, env: "{\"status\": ", file="manifest.json"), ("report", "<dir>/run"),
         "<dir>/run/manifest.json: not valid JSON"),
    # -- the command line --------------------------------------------------------------------------------
    Case("cli-trials-zero", "command line", "--trials 0",
         space(), search("--trials", "0"), "--trials must be a whole number of at least 1, got 0"),
    Case("cli-trials-negative", "command line", "--trials -5",
         space(), search("--trials", "-5"), "--trials must be a whole number of at least 1, got -5"),
    Case("cli-trials-not-int", "command line", "--trials 2.5",
         space(), search("--trials", "2.5"), "argument --trials: invalid int value: '2.5'"),
    Case("cli-timeout-zero", "command line", "--timeout 0",
         space(), search("--timeout", "0"), "--timeout must be a number of seconds above 0, got 0.0"),
    Case("cli-timeout-nan", "command line", "--timeout nan",
         space(), search("--timeout", "nan"), "--timeout must be a number of seconds above 0, got nan"),
    Case("cli-seed-negative", "command line", "--seed -1",
         space(), search("--seed", "-1"), "--seed must be a whole number from 0 to 2**32 - 1, got -1"),
    Case("cli-seed-not-int", "command line", "--seed abc",
         space(), search("--seed", "abc"), "argument --seed: invalid int value: 'abc'"),
    Case("cli-seed-absurd", "command line", "--seed 2**40 (beyond what the samplers take)",
         space(), search("--seed", str(2**40)), "--seed must be a whole number from 0 to 2**32 - 1, got 1099511627776"),
    Case("cli-batch-size-zero", "command line", "--batch-size 0",
         space(), search("--batch-size", "0"), "--batch-size must be at least 1"),
    Case("cli-max-length-small", "command line", "--max-length 3",
         space(), search("--max-length", "3"), "--max-length must be at least 16 tokens, got 3"),
    Case("cli-max-length-zero", "command line", "--max-length 0 (never quietly the default)",
         data(), evaluate("--max-length", "0"), "--max-length must be at least 16 tokens, got 0"),
    Case("cli-test-limit-zero", "command line", "--test-limit 0",
         space(), search("--test-limit", "0"), "--test-limit must be a whole number of at least 1, got 0"),
    Case("cli-test-fraction-zero", "command line", "evaluate --test-fraction 0",
         data(), evaluate("--test-fraction", "0", "--split", "test"), "--test-fraction must be between 0 and 1 (exclusive), got 0.0"),
    Case("cli-calibrate-unknown", "command line", "evaluate --calibrate with an unknown method",
         data(), evaluate("--calibrate", "platt"), "argument --calibrate: invalid choice: 'platt'"),
    Case("cli-model-kind-wrong", "command line", "--model-kind masked for a causal model",
         space(), search("--model-kind", "masked"),
         "model folder <causal>: its model type 'llama' cannot be loaded as a masked language model; it loads as causal"),
    Case("cli-model-missing", "command line", "search --model naming a folder that does not exist",
         space(), search("--model", "models/tiny"), "model folder models/tiny does not exist"),
    Case("cli-limit-zero", "command line", "evaluate --limit 0",
         data(), evaluate("--limit", "0"), "--limit must be at least 1"),
    Case("cli-device-unknown", "command line", "--device that is no device",
         space(), search("--device", "gpu0"), "--device: 'gpu0' is not a device (cpu, cuda, cuda:N, mps or auto)"),
    Case("cli-device-no-cuda", "command line", "--device cuda:7 where there is no such GPU",
         space(), search("--device", "cuda:7"), "--device: cuda:7: "),
    Case("cli-storage-bad-url", "command line", "--storage that is not a storage URL",
         space(), search("--storage", "postgres//localhost/db"), "--storage: postgres//localhost/db: cannot open it"),
    Case("cli-storage-unwritable", "command line", "--storage journal: in a folder that cannot exist",
         space(), search("--storage", "journal:/proc/none/journal.log"), "--storage: journal:/proc/none/journal.log: cannot open it"),
    Case("cli-resume-other-seed", "command line", "--resume a finished run with another --seed",
         run_copy(), search("--seed", "21", "--resume", space_file="<finished>/space.yaml"),
         "--resume: <dir>/run was started with other settings (seed, train_dev_sha256 differ)"),
    Case("cli-resume-other-space", "command line", "--resume a finished run with another space",
         both(space({"templates.seeds": ["{text} Honestly it was {mask}"]}), run_copy()), search("--resume"),
         "--resume: <dir>/run was started with other settings (space_sha256 differ)"),
    Case("cli-resume-other-precision", "command line", "--resume a float32 run in bfloat16",
         run_copy(), search("--precision", "bfloat16", "--resume", space_file="<finished>/space.yaml"),
         "--resume: <dir>/run was started with other settings (precision differ)"),
    Case("cli-precision-unknown", "command line", "--precision that is not one",
         space(), search("--precision", "float16"), "argument --precision: invalid choice: 'float16'"),
    Case("cli-out-finished-run", "command line", "--out a finished run, without --resume",
         both(space(), run_copy()), search(),
         "run folder <dir>/run is not empty: resume it, or choose another run folder (--resume, --out)"),
    Case("cli-out-is-file", "command line", "search --out an existing file",
         both(space(), write("run", "notes\n")), search(), "--out: <dir>/run: exists and is not a folder"),
    Case("cli-out-under-file", "command line", "search --out inside a file",
         both(space(), write("notes.txt", "notes\n")), search(out="<dir>/notes.txt/run"),
         "--out: <dir>/notes.txt/run: <dir>/notes.txt is a file"),
    Case("cli-out-unwritable", "command line", "search --out where nothing can be written (/proc)",
         space(), search(out="/proc/autoprompt-search-run"), "--out: /proc/autoprompt-search-run: cannot write in /proc"),
    Case("cli-evaluate-out-folder", "command line", "evaluate --out an existing folder",
         both(data(), write("reports/keep.txt", "x")), evaluate("--out", "<dir>/reports"), "--out <dir>/reports: is a folder"),
    Case("cli-evaluate-out-unwritable", "command line", "evaluate --out where nothing can be written (/proc)",
         data(), evaluate("--out", "/proc/report.json"), "--out /proc/report.json: cannot write in /proc"),
    Case("cli-evaluate-disk-full", "command line", "evaluate --out on a full disk",
         data(), evaluate("--out", "<dir>/report.json"), "<dir>/report.json: cannot write it (No space left on device)",
         patch=_disk_full_at("report.json")),
    Case("cli-train-out-finished", "command line", "train --out holding a finished search run",
         run_copy(), ("train", "<dir>/run", "--out", "<dir>/run", "--device", "cpu"), "output folder <dir>/run exists and is not empty"),
    Case("cli-train-epochs-zero", "command line", "train --epochs 0",
         run_copy(), ("train", "<dir>/run", "--out", "<dir>/trained", "--epochs", "0"),
         "--epochs must be a whole number of at least 1, got 0"),
    Case("cli-train-device", "command line", "train --device that is no device",
         run_copy(), ("train", "<dir>/run", "--out", "<dir>/trained", "--device", "cuda:x"),
         "--device: 'cuda:x' is not a device"),
    Case("cli-train-unfinished-run", "command line", "train from a run that has not finished",
         run_copy(lambda document, env: document.update(status="running"), file="manifest.json"), train("<dir>/run"),
         "<dir>/run/manifest.json: the run is not finished (status 'running')"),
    Case("cli-combine-one-run", "command line", "combine with a single run",
         run_copy(), ("combine", "<dir>/run", "--out", "<dir>/models"),
         "an ensemble of models needs at least 2 finished runs or train outputs, got 1"),
    Case("cli-combine-same-run", "command line", "combine the same run twice",
         run_copy(), ("combine", "<dir>/run", "<dir>/./run", "--out", "<dir>/models"), "<dir>/./run: the same run is given twice"),
    Case("cli-combine-other-sample", "command line", "combine runs scored on other test examples",
         second_run(_other_test_sample), ("combine", "<dir>/run", "<dir>/run2", "--out", "<dir>/models"),
         "<dir>/run2: its train, dev or test examples differ from those of <dir>/run"),
    Case("cli-combine-out-run", "command line", "combine --out a search run's folder",
         second_run(lambda manifest: None), ("combine", "<dir>/run", "<dir>/run2", "--out", "<dir>/run"),
         "<dir>/run: holds a search run (manifest.json); give another folder for the ensemble of models"),
    Case("cli-combine-out-taken", "command line", "combine --out a folder holding other predictions (a train output's)",
         both(second_run(lambda manifest: None), write("trained/test_predictions.csv", "test_row\n")),
         ("combine", "<dir>/run", "<dir>/run2", "--out", "<dir>/trained"),
         "<dir>/trained: already holds test_predictions.csv; choose another output folder"),
    Case("cli-combine-unfinished", "command line", "combine a run that has not finished",
         second_run(lambda manifest: manifest.update(status="running")), ("combine", "<dir>/run", "<dir>/run2", "--out", "<dir>/m"),
         "<dir>/run2/manifest.json: the run is not finished (status 'running')"),
    Case("cli-combine-trained-outside", "command line", "combine a train output that is not inside --out",
         both(run_copy(), write("trained/training.json", "{}"), write("trained/prompt.json", "{}")),
         ("combine", "<dir>/trained", "<dir>/run", "--out", "<dir>/models"),
         "<dir>/trained: a trained part must lie inside the output folder <dir>/models"),
    Case("cli-combine-head", "command line", "combine a classification-head train output",
         both(run_copy(), write("models/head/training.json", "{}"), write("models/head/classifier.json", "{}")),
         ("combine", "<dir>/models/head", "<dir>/run", "--out", "<dir>/models"),
         "<dir>/models/head: a classification-head model has no prompt; an ensemble of models takes the outputs of train's prompt "
         "methods (full, lora, soft)"),
    Case("cli-combine-trained-unfinished", "command line", "combine a train output that has not finished",
         both(run_copy(), write("models/half/checkpoint/state.json", "{}")),
         ("combine", "<dir>/models/half", "<dir>/run", "--out", "<dir>/models"),
         "<dir>/models/half: a train output that has not finished (training.json missing): finish it with train --resume"),
    Case("cli-models-and-model", "command line", "search --models with --model",
         space(), search("--models", "<causal>", "<masked>", "--model", "<causal>"), "--model cannot be combined with --models"),
    Case("cli-models-same-twice", "command line", "search --models naming one model twice",
         space(), search("--models", "<causal>", "<causal>"),
         "--models: give at least 2 different models, whose names give different folder names"),
    Case("cli-report-out-folder", "command line", "report --out an existing folder",
         both(run_copy(), write("pages/keep.txt", "x")), ("report", "<dir>/run", "--out", "<dir>/pages"),
         "--out: <dir>/pages: is a folder"),
    Case("cli-unknown-asset", "command line", "assets fetch of an unknown name",
         None, ("assets", "fetch", "smollm9"), "unknown asset 'smollm9'"),
    Case("cli-cache-size", "command line", "cache prune --max-size that is not a size",
         None, ("cache", "prune", "--max-size", "lots"), "--max-size: 'lots' is not a size"),
    Case("cli-search-disk-full", "command line", "a full disk while the exports are written",
         None, None, "<dir>/run/best.json: cannot write it (No space left on device)"),
    Case("cli-search-ctrl-c", "command line", "Ctrl-C while the exports are written",
         None, None, "autoprompt-search: interrupted", exit_code=130),
]
SEPARATE = {"cli-search-disk-full": "test_a_full_disk_while_writing_the_exports",
            "cli-search-ctrl-c": "test_ctrl_c_while_writing_the_exports"}
BY_ID = {case.id: case for case in CASES}


# -- fixtures ---------------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("module_cache")  # the asset and slot caches outside the tests' folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_causal_lm: Path) -> Path:
    """One finished search run of the good space (seed 13), made once."""
    folder = tmp_path_factory.mktemp("finished")
    testing.write_tiny_dataset(folder / "data.csv")
    (folder / "space.yaml").write_text(yaml.safe_dump(good_space(tiny_causal_lm), sort_keys=False), encoding="utf-8")
    assert main(["search", str(folder / "space.yaml"), "--no-cache", "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture
def env(tmp_path: Path, tiny_causal_lm: Path, tiny_masked_lm: Path, finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    monkeypatch.chdir(case_dir)  # a default output folder (results/runs/...) would land in the case folder
    return Env(case_dir, tiny_causal_lm, tiny_masked_lm, finished_run)


# -- checks -----------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    found: dict[str, bytes | None] = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), folder) + "/"] = None
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = Path(path).read_bytes()
    return found


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``autoprompt-search ARGV`` in this process: its exit code and stderr. Any exception other than
    the ones the command line handles is a traceback a user would see: the test fails with it."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors: exit code 2 and a usage line
        code = stop.code
    except Exception as error:  # noqa: BLE001 (any other exception would be a traceback)
        pytest.fail(f"autoprompt-search {' '.join(argv)} raised {type(error).__name__} (a traceback for the user): {error}")
    return code, capsys.readouterr().err


def check_message(code: int, err: str, case: Case, env: Env) -> None:
    expected = env.expand(case.expect)
    assert "Traceback" not in err, err
    assert code == case.exit_code, f"exit code {code}, expected {case.exit_code}; stderr:\n{err}"
    if case.exit_code == 130:  # Ctrl-C: the shell's convention, and a line that says so instead of an error
        assert expected in err and not ERROR_LINE.findall(err), err
        return
    errors = ERROR_LINE.findall(err)
    assert len(errors) == 1, f"expected one error message, got {len(errors)}:\n{err}"
    message = err[err.index(errors[0]):]
    assert expected in message, f"expected {expected!r} in the message:\n{message}"


# -- the inventory ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [case for case in CASES if case.args is not None], ids=lambda case: case.id)
def test_bad_input(case: Case, env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (case.build or _nothing)(env)
    before = snapshot(env.dir)
    if case.patch is not None:
        case.patch(monkeypatch)
    code, err = run_cli([env.expand(arg) for arg in case.args], capsys)
    check_message(code, err, case, env)
    after = snapshot(env.dir)
    assert sorted(after) == sorted(before), f"files appeared or vanished: {sorted(set(after) ^ set(before))}"
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"changed by a refused command: {changed}"


def test_the_inventory_has_60_distinct_cases_and_each_runs() -> None:
    assert len(CASES) >= 60
    assert len(BY_ID) == len(CASES), "case ids repeat"
    assert len({(case.area, case.description) for case in CASES}) == len(CASES), "two cases describe the same input"
    separate = {case.id for case in CASES if case.args is None}
    assert separate == set(SEPARATE), "a case without arguments needs its own test, named in SEPARATE"
    assert all(name in globals() for name in SEPARATE.values())


# -- exported JSON through the library's own loader -------------------------------------------------------
LOAD_EXPECT = {  # the exported-JSON cases that autoprompt_search.load refuses too (it needs no data: the splits are not its to check)
    "export-truncated": "<dir>/run/best.json: not valid JSON",
    "export-not-object": "<dir>/run/best.json: expected a JSON object at the top level",
    "export-tampered-template": "<dir>/run/best.json: prompt.template: template '{text} It was great' has no label slot",
    "export-tampered-calibration": "<dir>/run/best.json: prompt.calibration.bias: expected 2 numbers",
    "export-newer-version": "<dir>/run/best.json: format_version: the file has version 99",
    "export-wrong-format": "<dir>/run/best.json: format: expected 'autoprompt_search.prompt'",
    "export-model-hash-mismatch": "<dir>/run/best.json: model.weights_sha256: the prompt was found on another model",
    "export-model-missing": "<dir>/run/best.json: model: cannot load the prompt's model",
}


@pytest.mark.parametrize("case_id", sorted(LOAD_EXPECT))
def test_exported_json_through_load(case_id: str, env: Env) -> None:
    """``autoprompt_search.load`` on the same files: a UserError (exit code 2 from the command line) naming
    the file and the field, and no other exception."""
    import autoprompt_search
    from autoprompt_search.errors import UserError

    case = BY_ID[case_id]
    case.build(env)
    before = snapshot(env.dir)
    try:
        autoprompt_search.load(env.expand(case.args[1]), cache=False)
    except UserError as error:
        assert env.expand(LOAD_EXPECT[case_id]) in str(error)
    except Exception as error:  # noqa: BLE001 (any other exception is a crash)
        pytest.fail(f"load raised {type(error).__name__}: {error}")
    else:
        pytest.fail("load accepted the file")
    assert snapshot(env.dir) == before


def test_a_utf8_byte_order_mark_is_read_not_refused(tmp_path: Path) -> None:
    """The other side of ``data-utf16-bom``: a UTF-8 file with a BOM (as Excel saves it) is read, header intact."""
    from autoprompt_search import data as data_module

    path = tmp_path / "excel.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"label,text\npositive,good\nnegative,bad\n")
    dataset = data_module.load_file(path)
    assert dataset.labels == ["negative", "positive"] and [e.text for e in dataset.examples] == ["good", "bad"]


# -- the cases that need a running search -------------------------------------------------------------------
def _finished_files(run: Path) -> None:
    """Nothing half-written in a run folder a search left: no temporary file, every JSON file whole."""
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    for path in run.glob("*.json"):
        json.loads(path.read_text())


def test_a_full_disk_while_writing_the_exports(env: Env, capsys, monkeypatch) -> None:
    case = BY_ID["cli-search-disk-full"]
    space()(env)
    _disk_full_at("best.json")(monkeypatch)
    code, err = run_cli(["search", str(env.dir / "space.yaml"), "--no-cache", "--out", str(env.dir / "run")], capsys)
    check_message(code, err, case, env)
    run = env.dir / "run"
    _finished_files(run)
    assert not (run / "best.json").exists() and not (run / "report.html").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] != "complete"


def test_ctrl_c_while_writing_the_exports(env: Env, capsys) -> None:
    """A real SIGINT, sent while ensemble.json's temporary file is written and not yet in place."""
    case = BY_ID["cli-search-ctrl-c"]
    space()(env)
    run = env.dir / "run"
    script = textwrap.dedent("""
        import os, signal, sys
        # a shell that starts its jobs in the background makes them ignore SIGINT: a terminal's Ctrl-C is the default handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        real = os.replace
        def replace(source, target, **kwargs):
            if os.path.basename(str(target)) == "ensemble.json":
                os.kill(os.getpid(), signal.SIGINT)
            return real(source, target, **kwargs)
        os.replace = replace
        from autoprompt_search.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """)
    result = subprocess.run([sys.executable, "-c", script, "search", str(env.dir / "space.yaml"), "--no-cache", "--out", str(run)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check_message(result.returncode, result.stderr, case, env)
    _finished_files(run)
    assert (run / "best.json").is_file() and not (run / "ensemble.json").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted" and "--resume" in result.stderr
    # and the run finishes when resumed
    assert run_cli(["search", str(env.dir / "space.yaml"), "--no-cache", "--out", str(run), "--resume"], capsys)[0] == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((run / "ensemble.json").read_text())["kind"] == "ensemble"


# -- the table --------------------------------------------------------------------------------------------------
def table_text() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "# Bad inputs",
        "",
        f"{len(CASES)} things a user can hand `autoprompt-search` wrongly, each a test in `tests/test_bad_inputs.py`",
        "(generated from its `CASES`; `UPDATE_BAD_INPUT_TABLE=1 pytest tests/test_bad_inputs.py` rewrites this file).",
        "Each test checks the exit code, one error message containing the fragment below and no traceback on",
        "stderr, and that nothing was half-written: the case's folder is byte for byte what it was before, or,",
        "for a search stopped by a full disk or Ctrl-C while it writes its exports, every file left is whole, the",
        "run is not marked complete, and (checked after Ctrl-C) it finishes when resumed.",
        "`<dir>` is the case's folder; `<causal>`/`<masked>` tiny models.",
        "",
        "| area | case | what the user sees (a fragment of the message) | exit code |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        lines.append(f"| {case.area} | {cell(case.description)} | `{cell(case.expect)}` | {case.exit_code} |")
    return "\n".join(lines) + "\n"


def test_the_table_in_results_is_generated_from_the_cases() -> None:
    text = table_text()
    if os.environ.get(UPDATE_VARIABLE) == "1":
        TABLE.write_text(text, encoding="utf-8")
    assert TABLE.is_file() and TABLE.read_text(encoding="utf-8") == text, (
        f"{TABLE} is not the table of CASES; regenerate it: {UPDATE_VARIABLE}=1 pytest tests/test_bad_inputs.py")

