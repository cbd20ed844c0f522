"""Tests for autoprompt_search.spaces: loading, includes, validation messages, overrides."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from autoprompt_search import data
from autoprompt_search.assets import DATASETS
from autoprompt_search.cli import validate_cmd
from autoprompt_search.errors import UserError
from autoprompt_search.space_types import DatasetSpec, Unlabelled
from autoprompt_search.spaces import Budget, SearchSpace, load_space, space_from_mapping

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
BUNDLED = sorted(p for p in SPACES.glob("*.yaml") if p.name != "base.yaml")

MINIMAL = """\
dataset: mr
templates:
  seeds: ["{text} It was {mask}"]
verbalizers:
  seeds: [{negative: [bad], positive: [good]}]
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_space(path)
    return str(info.value)


# ---------------------------------------------------------------- bundled spaces


def test_every_bundled_dataset_has_a_space():
    assert {p.stem for p in BUNDLED if "_" not in p.stem} == data.REGISTERED  # variants are named <dataset>_<variant>
    assert {name for name, asset in DATASETS.items() if asset.labels} == data.REGISTERED


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_space_validates(path):
    space = load_space(path)
    dataset = path.stem.split("_")[0]
    assert space.name == path.stem and space.dataset.name == dataset and space.dataset.registered
    assert space.source == path and space.raw["dataset"] == dataset and "include" not in space.raw
    assert space.labels == DATASETS[dataset].labels
    assert space.model == "smollm2-135m" and space.model_kind == "causal"
    assert all(t.text_after_slot() == "" for t in space.templates.seeds)  # causal: {mask} is last
    assert all(set(v.labels) == set(space.labels) for v in space.verbalizers.seeds)
    assert 30 <= space.templates.max_candidates <= 40 and 40 <= space.budget.trials <= 80
    assert space.few_shot.k == 16 and space.few_shot.seeds == data.LMBFF_SEEDS
    json.dumps(space.to_dict())


def test_base_alone_is_not_runnable():
    assert "base.yaml: dataset is required" in _error(SPACES / "base.yaml")


def test_mr_space_values():
    space = load_space(SPACES / "mr.yaml")
    assert space.templates.seeds[0].source == "Review: {text}\nSentiment: {mask}"
    assert space.verbalizers.seeds[0].to_dict() == {"negative": ["negative"], "positive": ["positive"]}
    assert space.calibration == ("none", "contextual", "prior") and space.objective == "accuracy"
    assert space.pruner.type == "median" and space.ensemble.size == 3
    words = space.generators.label_words
    assert words.scoring == ("mean_log_prob", "held_out_auc") and words.ordering == "held_out_auc"
    assert words.shortlist_size == 400 and words.drop_input_independent


def test_label_word_orderings_are_one_or_the_other(tmp_path):
    spec = (SPACES / "mr.yaml").read_text() + "\n  label_words: {scoring: [mean_log_prob, likelihood_ratio, held_out_auc]}\n"
    (tmp_path / "base.yaml").write_text((SPACES / "base.yaml").read_text())
    (tmp_path / "two.yaml").write_text(spec)
    message = "two.yaml: generators.label_words.scoring lists likelihood_ratio and held_out_auc, two orders: choose one"
    assert message in _error(tmp_path / "two.yaml")
    (tmp_path / "ratio.yaml").write_text(spec.replace(", held_out_auc]", "]"))
    ratio = load_space(tmp_path / "ratio.yaml").generators.label_words
    assert ratio.ordering == "likelihood_ratio" and ratio.shortlist_size == 50


def test_validate_command_prints_one_line_per_file(capsys):
    parser = argparse.ArgumentParser()
    validate_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["validate", str(SPACES / "mr.yaml"), str(SPACES / "bbc.yaml")])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.search(r"mr\.yaml: ok: mr: dataset mr .*model smollm2-135m, 4 seed templates \+ 48 block combinations"
                     r" -> 40 candidates .*3 verbalizer seeds, generators: label_words, demonstrations, budget 60 trials", lines[0])
    assert "model smollm2-135m (prompts of 128 tokens), 4 seed templates" in lines[1]


# ---------------------------------------------------------------- includes and defaults


def test_minimal_file_gets_defaults(tmp_path):
    space = load_space(_write(tmp_path, "tiny.yaml", MINIMAL))
    assert space.name == "tiny" and space.model == "smollm2-135m" and space.templates.blocks is None
    assert space.max_length is None and load_space(SPACES / "bbc.yaml").max_length == 128
    assert space.budget == Budget(60, None) and space.few_shot.seeds == data.LMBFF_SEEDS


def test_include_deep_merge_including_file_wins(tmp_path):
    _write(tmp_path, "base.yaml", "budget: {trials: 10, timeout_seconds: 30}\ncalibration: [none, prior]\n"
                                  "pruner: {type: wilcoxon, chunks: 8}\n")
    child = _write(tmp_path, "child.yaml", "include: base.yaml\nbudget: {trials: 5}\ncalibration: [contextual]\n" + MINIMAL)
    space = load_space(child)
    assert space.budget == Budget(5, 30)  # mappings merge
    assert space.calibration == ("contextual",)  # lists replace
    assert space.pruner.type == "wilcoxon" and space.pruner.chunks == 8
    assert space.raw["budget"] == {"trials": 5, "timeout_seconds": 30}


def test_include_list_in_order_and_relative_to_the_including_file(tmp_path):
    (tmp_path / "shared").mkdir()
    _write(tmp_path, "shared/a.yaml", "include: b.yaml\nobjective: macro_f1\nensemble: {size: 2}\n")
    _write(tmp_path, "shared/b.yaml", "ensemble: {size: 9}\nbudget: {trials: 7}\n")
    _write(tmp_path, "shared/c.yaml", "ensemble: {size: 3}\n")
    space = load_space(_write(tmp_path, "main.yaml", "include: [shared/a.yaml, shared/c.yaml]\n" + MINIMAL))
    assert (space.objective, space.ensemble.size, space.budget.trials) == ("macro_f1", 3, 7)


def test_include_cycle_names_the_chain(tmp_path):
    _write(tmp_path, "a.yaml", "include: b.yaml\n" + MINIMAL)
    _write(tmp_path, "b.yaml", "include: a.yaml\n")
    message = _error(tmp_path / "a.yaml")
    assert "include cycle" in message and re.search(r"a\.yaml -> .*b\.yaml -> .*a\.yaml", message)
    _write(tmp_path, "self.yaml", "include: self.yaml\n")
    assert "include cycle" in _error(tmp_path / "self.yaml")


def test_included_file_missing_names_the_includer(tmp_path):
    message = _error(_write(tmp_path, "a.yaml", "include: nowhere.yaml\n" + MINIMAL))
    assert "a.yaml: include:" in message and "nowhere.yaml: no such file" in message


def test_error_in_included_value_names_the_included_file(tmp_path):
    _write(tmp_path, "base.yaml", "budget: {trials: 0}\n")
    message = _error(_write(tmp_path, "child.yaml", "include: base.yaml\n" + MINIMAL))
    assert message.startswith(str(tmp_path / "base.yaml")) and "budget.trials must be at least 1" in message


def test_file_dataset_relative_to_yaml(tmp_path):
    (tmp_path / "data").mkdir()
    _write(tmp_path, "data/pairs.csv", "premise,hypothesis,gold\na,b,yes\nc,d,no\n")
    (tmp_path / "spaces").mkdir()
    path = _write(tmp_path, "spaces/nli.yaml", """\
dataset: {path: ../data/pairs.csv, text_fields: [premise, hypothesis], label_field: gold, labels: ["yes", "no"]}
templates:
  seeds: ["{premise} Question: {hypothesis}? Answer: {mask}"]
  blocks: {endings: ["Answer: {mask}"]}
verbalizers:
  seeds: [{"yes": ["Yes"], "no": ["No"]}]
""")
    space = load_space(path)
    assert space.dataset.path == tmp_path / "data" / "pairs.csv" and space.dataset.path.is_absolute()
    assert space.dataset.text_fields == ("premise", "hypothesis") and space.labels == ("yes", "no")
    loaded = data.load_split(space.dataset.spec, "all", **space.dataset.load_kwargs())
    assert loaded.labels == ["yes", "no"] and loaded.fields == ["premise", "hypothesis"] and len(loaded) == 2


def test_a_dataset_built_in_python_names_its_file_from_anywhere(tmp_path, monkeypatch):
    """A relative path given in code is made absolute from the working directory, as a space file's
    are from the file: the manifest then names the same file wherever the run is resumed."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "d.csv", "text,label\nx,a\ny,b\n")
    spec = DatasetSpec("d", Path("sub/../d.csv"), labels=("a", "b"))
    unlabelled = Unlabelled(texts=5, path="d.csv")
    assert spec.path == tmp_path / "d.csv" == unlabelled.path
    monkeypatch.chdir(tmp_path.parent)
    assert len(DatasetSpec.from_record({**spec.__dict__, "path": str(spec.path)}).load_split("all")) == 2
    assert Unlabelled.from_record(unlabelled.to_dict()) == unlabelled
    with pytest.raises(UserError, match="dataset.path must be a file path"):
        DatasetSpec("d", " ", labels=("a", "b"))  # not the working directory


def test_file_dataset_without_labels_takes_sorted_verbalizer_labels(tmp_path):
    _write(tmp_path, "d.jsonl", '{"text": "x", "label": "b"}\n')
    space = load_space(_write(tmp_path, "s.yaml", MINIMAL.replace("dataset: mr", "dataset: d.jsonl")
                              .replace("{negative: [bad], positive: [good]}", "{z: [bad], a: [good]}")))
    assert space.dataset.labels is None and space.labels == ("a", "z")


def test_with_overrides(tmp_path):
    space = load_space(SPACES / "mr.yaml")
    changed = space.with_overrides(model="some/folder", trials=3, timeout=12.5)
    assert (changed.model, changed.budget.trials, changed.budget.timeout_seconds) == ("some/folder", 3, 12.5)
    assert changed.model_kind is None and changed.overrides["model"] == "some/folder"
    assert space.budget.trials == 60 and space.with_overrides() == space
    with pytest.raises(UserError, match=r"mr\.yaml: .*budget\.trials must be at least 1"):
        space.with_overrides(trials=0)


# ---------------------------------------------------------------- errors name the file and the field


@pytest.mark.parametrize("text, expected", [
    ("dataset: mr\ntemplate: {}\n", r"template: unknown key \(did you mean 'templates'\?"),
    ("budget: {trails: 5}\n", r"budget\.trails: unknown key \(did you mean 'trials'\?"),
    ("templates:\n  blocks: {endngs: []}\n", r"templates\.blocks\.endngs: unknown key \(did you mean 'endings'\?"),
    ("generators: {label_word: {}}\n", r"generators\.label_word: unknown key \(did you mean 'label_words'\?"),
])  # fmt: skip
def test_unknown_key_names_the_path(tmp_path, text, expected):
    message = _error(_write(tmp_path, "bad.yaml", text))
    assert message.startswith(str(tmp_path / "bad.yaml") + ": ") and re.search(expected, message)


def _bad(tmp_path: Path, old: str, new: str) -> str:
    return _error(_write(tmp_path, "bad.yaml", MINIMAL.replace(old, new, 1) if old else MINIMAL + new))


@pytest.mark.parametrize("old, new, expected", [
    ('seeds: ["{text} It was {mask}"]', 'seeds: ["{text} It was {mask}", "{text} It was good."]',
     re.escape("templates.seeds[1]: template '{text} It was good.' has no label slot {mask}")),
    ('seeds: ["{text} It was {mask}"]', 'seeds: ["{txt} It was {mask}"]', r"templates.seeds\[0\]: template .* unknown field \{txt\}"),
    ('seeds: ["{text} It was {mask}"]', 'seeds: ["{text} It was {mask}."]', r"templates.seeds\[0\] continues after the slot .*causal"),
    ('seeds: ["{text} It was {mask}"]', "seeds: [{text} It was {mask}]", r"line 3, column \d+: invalid YAML: .*put templates in quotes"),
    ('seeds: ["{text} It was {mask}"]', "seeds:\n    - {text: 1}", r"templates.seeds\[0\] must be a quoted string, got \{'text': 1\} \(YAML reads"),  # noqa: E501
    ("{negative: [bad], positive: [good]}", "{negative: [bad], positve: [good]}", r"verbalizers.seeds\[0\]: unknown label 'positve'"),
    ("{negative: [bad], positive: [good]}", "{negative: [bad]}", r"verbalizers.seeds\[0\]: no words for label 'positive'"),
    ("{negative: [bad], positive: [good]}", "{negative: [no], positive: [yes]}", r"verbalizers.seeds\[0\] has False, .*quotes"),
    ("", "calibration: [none, contextul]\n", r"calibration\[1\] must be one of none, contextual, prior, got 'contextul' \(did you mean 'contextual'\?\)"),  # noqa: E501
    ("", "budget: {trials: 0}\n", "budget.trials must be at least 1, got 0"),
    ("", "budget: {trials: null}\n", "budget must set trials, timeout_seconds or both"),
    ("", "budget: {timeout_seconds: -1}\n", "budget.timeout_seconds must be a number of seconds above 0"),
    ("", "objective: f1\n", "objective must be one of accuracy, macro_f1"),
    ("", "pruner: {type: hyperband}\n", "pruner.type must be one of median, wilcoxon, none"),
    ("", "ensemble: {size: 0}\n", "ensemble.size must be at least 1"),
    ("", "unlabelled: {texts: -5}\n", "unlabelled.texts must be at least 0, got -5"),
    ("", "unlabelled: {count: 5}\n", "unlabelled"),
    ("", "unlabelled: {texts: 5, path: nowhere.csv}\n", r"unlabelled.path 'nowhere.csv': no such file \(looked for .*nowhere.csv\)"),
    ("", "unlabelled: {path: bad.yaml}\n", r"unlabelled.path 'bad.yaml': unknown extension"),
    ("", "unlabelled: {select: agreement}\n", "unlabelled.select 'agreement' reads unlabelled texts: set unlabelled.texts above 0"),
    ("", "unlabelled: {texts: 5, select: agreemnt}\n", "unlabelled.select must be one of labelled, agreement, got 'agreemnt'"),
    ("", "few_shot: {k: 0}\n", "few_shot.k must be at least 1"),
    ("", "few_shot: {seeds: []}\n", "few_shot.seeds must list at least one seed"),
    ("", "few_shot: {seeds: [1, x]}\n", r"few_shot.seeds\[1\] must be an integer, got 'x'"),
    ("", "generators: {label_words: {scoring: [pmi]}}\n", r"generators.label_words.scoring\[0\] must be one of"),
    ("", "generators: {label_words: {words_per_class: 0}}\n", "generators.label_words.words_per_class must be at least 1"),
    ("", "generators: {label_probe: {words_per_class: 0}}\n", "generators.label_probe.words_per_class must be at least 1"),
    ("", "generators: {triggers: {position: middle}}\n", "generators.triggers.position must be one of after, before, slot"),
    ("", "generators: {triggers: {loss: hinge}}\n", "generators.triggers.loss must be one of cross_entropy, label_likelihood"),
    ("", "generators: {triggers: {filters: [digits]}}\n", r"generators.triggers.filters\[0\] must be one of"),
    ("", "generators: {triggers: {steps: 0}}\n", "generators.triggers.steps must be at least 1"),
    ("", "generators: {triggers: {patience: 0}}\n", "generators.triggers.patience must be at least 1"),
    ("", "generators: {triggers: {fluency: 0}}\n", "generators.triggers.fluency must be at least 1"),
    ("", "generators: {triggers: {init: ''}}\n", "generators.triggers.init must be a word"),
    ("", "generators: {triggers: {templates: ['{text} It was {mask}']}}\n", r"generators.triggers.templates\[0\] .* has no trigger slot"),
    ("", "generators: {triggers: {templates: ['{text} [T] {mask} .']}}\n", r"generators.triggers.templates\[0\] continues after the slot"),
    ("", "generators: {triggers: {steps: 3, step: 4}}\n", r"generators.triggers.step: unknown key \(did you mean 'steps'\?"),
    ("", "few_shot: {k: 1}\ngenerators: {label_probe: {enabled: true}}\n", r"generators.label_probe needs few_shot.k of at least 2"),
    ('seeds: ["{text} It was {mask}"]', 'seeds: ["{text} [T] It was {mask}"]', r"templates.seeds\[0\] .* holds trigger slots \[T\]"),
    ("seeds: [", "blocks: {endings: ['[T] It was {mask}']}\n  seeds: [", r"templates.blocks.endings\[0\]: .* holds a trigger slot"),
    ("seeds: [", "max_candidates: 0\n  seeds: [", "templates.max_candidates must be at least 1"),
    ('seeds: ["{text} It was {mask}"]', "seeds: []", "templates must give seeds, blocks or both"),
    ("seeds: [", "blocks: {endings: [It was]}\n  seeds: [", r"templates.blocks.endings\[0\]: template .* has no label slot"),
    ("seeds: [", "blocks: {prefixes: ['{mask} '], endings: ['{mask}']}\n  seeds: [", r"templates.blocks.prefixes\[0\]: .* 2 label slots"),
    ("seeds: [", "blocks: {endings: ['It was {mask}!']}\n  seeds: [", r"templates.blocks.endings\[0\] continues after the slot"),
    ("dataset: mr", "dataset: imdb", r"dataset 'imdb' is not a registered dataset"),
    ("dataset: mr", "dataset: {name: mr, labels: [a, b]}", "only for data files"),
    ("dataset: mr", "dataset: missing.csv", r"dataset.path 'missing.csv': no such file"),
    ("", "model: no-such-model\n", "model 'no-such-model' is neither a registered model"),
    ("", "name: ''\n", "name must be a non-empty string"),
    ("", "max_length: 8\n", "max_length must be at least 16, got 8"),
    ("", "max_length: long\n", "max_length must be an integer, got 'long'"),
])  # fmt: skip
def test_errors_name_file_and_field(tmp_path, old, new, expected):
    message = _bad(tmp_path, old, new)
    assert message.startswith(str(tmp_path / "bad.yaml") + ": "), message
    assert re.search(expected, message), message


def test_yaml_syntax_error_has_line_number(tmp_path):
    message = _error(_write(tmp_path, "bad.yaml", 'dataset: mr\ntemplates:\n  seeds: ["{text} {mask}"\nverbalizers: x\n'))
    assert re.match(re.escape(str(tmp_path / "bad.yaml")) + r": line \d+, column \d+: invalid YAML", message)
    message = _error(_write(tmp_path, "tabs.yaml", "dataset: mr\n\tbudget: 3\n"))
    assert "line 2" in message


@pytest.mark.parametrize("text, expected", [("", "the file is empty"), ("- a\n- b\n", "expected a mapping")])
def test_file_not_a_mapping(tmp_path, text, expected):
    assert expected in _error(_write(tmp_path, "bad.yaml", text))


def test_duplicate_key_is_an_error(tmp_path):
    message = _error(_write(tmp_path, "bad.yaml", MINIMAL + "templates: {max_candidates: 3}\n"))
    assert message == f"{tmp_path / 'bad.yaml'}: line 6: duplicate key 'templates' (first at line 2)"


def test_file_not_found(tmp_path):
    assert _error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"


def test_dataclasses_validate_on_direct_construction():
    with pytest.raises(UserError, match="budget.trials must be at least 1"):
        Budget(trials=0)
    space = load_space(SPACES / "mr.yaml")
    with pytest.raises(UserError, match="objective must be one of"):
        SearchSpace(**{**{f: getattr(space, f) for f in ("name", "dataset", "templates", "verbalizers")}, "objective": "f1"})


def test_generation_rounds_are_checked(tmp_path) -> None:
    from autoprompt_search.spaces import load_space

    base = (
        "name: r\ndataset: mr\nmodel: smollm2-135m\ntemplates: {seeds: ['{text} It was {mask}']}\n"
        "verbalizers: {seeds: [{negative: [bad], positive: [good]}]}\n"
    )
    cases = {
        "generators: {rounds: {count: 0}}\n": "generators.rounds.count",
        "generators: {rounds: {trials: 0}}\n": "generators.rounds.trials",
        "generators: {label_words: {enabled: false}, rounds: {count: 2}}\n": "later rounds run the word generators again",
        "generators: {rounds: {count: 2, every: 3}}\n": "every",
    }
    for extra, message in cases.items():
        path = tmp_path / "space.yaml"
        path.write_text(base + extra)
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            load_space(path)
    path.write_text(base + "generators: {rounds: {count: 3, trials: 5}}\n")
    assert load_space(path).generators.rounds.count == 3


@pytest.mark.parametrize("value, message", [
    ("2020-13-45", "invalid YAML: a value cannot be read (ValueError: month must be in 1..12)"),
    ("!!int abc", "invalid YAML: a value cannot be read (ValueError"),
    ("!!bool maybe", "invalid YAML: a value cannot be read (KeyError: 'maybe')"),
    ("!!timestamp x", "invalid YAML: a value cannot be read (AttributeError"),
    ("9" * 5000, "invalid YAML: a value cannot be read (ValueError: Exceeds the limit"),
    ("[" * 600 + "]" * 600, "invalid YAML: nested too deeply"),
])  # fmt: skip
def test_values_yaml_cannot_construct_are_invalid_yaml(tmp_path, value, message):
    path = _write(tmp_path, "s.yaml", f"budget: {value}\n" + MINIMAL)
    assert _error(path).startswith(f"{path}: {message}")


@pytest.mark.parametrize("text, key", [("calibration: &a [*a]", "calibration[0]"), ("description: &m {name: *m}", "description.name")])
def test_a_value_containing_itself_is_refused(tmp_path, text, key):
    path = _write(tmp_path, "s.yaml", text + "\n" + MINIMAL)
    assert _error(path) == f"{path}: {key}: the value contains itself (an alias inside its own anchor)"


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    items = ["&l0 [x, x]"] + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = _write(tmp_path, "s.yaml", "description: [" + ", ".join(items) + "]\n" + MINIMAL)
    assert "more than 100,000 values once its aliases are expanded" in _error(path)
    items = ["&l0 {x: 1, y: 2}"] + [f"&l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(8)) + "}" for i in range(1, 5)]
    bomb = _write(tmp_path, "bomb.yaml", "dataset: {name: {" + ", ".join(f"a{i}: {it}" for i, it in enumerate(items)) + "}}\n"
                  + MINIMAL.replace("dataset: mr\n", ""))
    assert "dataset must be one of" in _error(bomb)  # under the limit: checked without rescanning every key


@pytest.mark.parametrize("text, key", [("name: 0b" + "1" * 15000, "name"), ("budget: {trials: 0x" + "f" * 4000 + "}", "budget.trials"),
                                       ("max_length: 0x" + "f" * 4000, "max_length")])
def test_huge_integers_are_refused_naming_the_field(tmp_path, text, key):
    path = _write(tmp_path, "s.yaml", text + "\n" + MINIMAL)
    assert _error(path) == f"{path}: {key}: the integer is too large (beyond ±2**63)"


@pytest.mark.parametrize("section, key", [("model: '~nosuchuser/m'", "model '~nosuchuser/m': not a usable folder path"),
                                          ("model: " + "x" * 300, "model 'xxx"),
                                          ("dataset: {path: '~nosuchuser/x.csv'}", "dataset.path '~nosuchuser/x.csv': not a usable"),
                                          ("dataset: {path: " + "x" * 300 + ".csv}", "dataset.path 'xxx")])
def test_unusable_paths_are_user_errors(tmp_path, section, key):
    text = section + "\n" + (MINIMAL.replace("dataset: mr\n", "") if section.startswith("dataset") else MINIMAL)
    path = _write(tmp_path, "s.yaml", text)
    message = _error(path)
    assert message.startswith(f"{path}: {key}")
    assert "not a usable" in message


@pytest.mark.parametrize("include, message", [('"a\\0.yaml"', "include: 'a\\x00.yaml' is not a usable file name (embedded null byte)"),
                                              ('"\\ud800"', "include: the text holds a lone surrogate '\\ud800'")])
def test_unusable_include_names_are_user_errors(tmp_path, include, message):
    path = _write(tmp_path, "s.yaml", f"include: {include}\n" + MINIMAL)
    assert _error(path).startswith(f"{path}: {message}")


@pytest.mark.parametrize("include", [[47], 5, 1.5])
def test_include_in_a_mapping_must_name_files(include):
    with pytest.raises(UserError, match=r"<space>: include: must be a file name or a list of file names$"):
        space_from_mapping({"include": include, "dataset": "mr"})


def test_include_name_too_long_is_a_user_error():
    with pytest.raises(UserError, match="not a usable file name"):
        space_from_mapping({"include": "x" * 300, "dataset": "mr"})


def test_text_that_is_not_unicode_is_refused(tmp_path):
    path = _write(tmp_path, "s.yaml", MINIMAL.replace("It was", "\\ud800"))
    assert _error(path).startswith(f"{path}: templates.seeds[0]: the text holds a lone surrogate '\\ud800', which is not a character")
    path = _write(tmp_path, "s.yaml", MINIMAL.replace("negative", '"\\udb8e"'))
    assert _error(path).startswith(f"{path}: verbalizers.seeds[0]: the text holds a lone surrogate")


def test_an_unlabelled_file_needs_a_number_of_texts_and_is_recorded(tmp_path: Path) -> None:
    _write(tmp_path, "texts.csv", "text\nsome text\n")
    message = _error(_write(tmp_path, "space.yaml", MINIMAL + "unlabelled: {path: texts.csv}\n"))
    assert "unlabelled.path needs unlabelled.texts above 0" in message
    space = load_space(_write(tmp_path, "space.yaml", MINIMAL + "unlabelled: {texts: 10, path: texts.csv}\n"))
    assert space.to_dict()["unlabelled"] == {"texts": 10, "path": str(tmp_path / "texts.csv")}
    assert "unlabelled" not in load_space(_write(tmp_path, "space.yaml", MINIMAL)).to_dict()


# -- the record a run's manifest keeps ---------------------------------------------------------------
def test_the_recorded_dataset_and_unlabelled_sections_rebuild_what_the_search_used(tmp_path):
    """A run is read back from its manifest's record (RunFolder.splits): every kind of dataset and the
    unlabelled section come back equal, paths absolute, labels in the order given."""
    from autoprompt_search.space_types import DatasetSpec, Unlabelled
    from autoprompt_search.testing import write_tiny_dataset

    write_tiny_dataset(tmp_path / "tiny.csv")
    (tmp_path / "pool.csv").write_text("text\na text\nanother text\n", encoding="utf-8")
    registered = space_from_mapping({"include": "mr"})
    on_file = space_from_mapping({"include": "mr", "dataset": {"path": str(tmp_path / "tiny.csv"), "text_fields": ["text"],
                                                               "labels": ["positive", "negative"], "test_fraction": 0.25},
                                  "unlabelled": {"texts": 2, "path": str(tmp_path / "pool.csv")}})
    records = [{"text": "good film", "label": "positive"}, {"text": "bad film", "label": "negative"}]
    in_memory = registered.with_data(records)
    for space, given in ((registered, None), (on_file, None), (in_memory, records)):
        recorded = json.loads(json.dumps(space.to_dict()))  # as the manifest holds it
        rebuilt = DatasetSpec.from_record(recorded["dataset"], given)
        assert rebuilt == space.dataset and rebuilt.records == space.dataset.records
        assert Unlabelled.from_record(recorded.get("unlabelled") or {}) == space.unlabelled
    assert on_file.dataset.labels == ("positive", "negative") and Path(on_file.to_dict()["dataset"]["path"]).is_absolute()
    assert in_memory.dataset.name == "mr-records" and on_file.unlabelled.path == tmp_path / "pool.csv"
