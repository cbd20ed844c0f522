"""Files from others: loading a ``best.json``, an ``ensemble.json`` or a ``train`` output folder runs
no code, reads weights from safetensors only, checks the model's (and adapter's) hash before the
model is opened, follows no path out of the file's own folder, and turns every tampered field into
one user error naming the file and the field."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import autoprompt_search
from autoprompt_search import assets, backends, export
from autoprompt_search import predictor as prompt_predictor
from autoprompt_search.backends import load_backend
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import sha256_file
from autoprompt_search.prompt import AdapterInfo, ModelInfo, PromptSpec
from autoprompt_search.prompt_file import FORMAT_VERSION, MAX_COUNT, MAX_FILE_BYTES
from autoprompt_search.scoring import PromptScorer
from autoprompt_search.templates import Template
from autoprompt_search.testing import TINY_CORPUS
from autoprompt_search.verbalizers import Verbalizer

LABELS = ("negative", "positive")
TEMPLATE = "{text} It was {mask}"
TRIGGER_TEMPLATE = "{text} [T] It was {mask}"
VERBALIZER = {"negative": ["bad"], "positive": ["good"]}
TEXTS = TINY_CORPUS[:4]
PACKAGE = Path(autoprompt_search.__file__).parent


pytestmark = pytest.mark.usefixtures("module_cache")  # the asset and slot caches outside the tests' folders


@pytest.fixture(scope="module")
def backend(tiny_causal_lm):
    return load_backend(tiny_causal_lm, device="cpu")


def _word_ids(backend, template: str) -> dict[str, list[list[int]]]:
    ids = PromptScorer(backend).word_ids(Template.parse(template, fields=("text",)), Verbalizer.parse(VERBALIZER, LABELS))
    return {label: [list(word) for word in words] for label, words in zip(LABELS, ids)}


def _write(path: Path, backend, *, name: str, model_path: str = "", weights: str | None = None,
           adapter: AdapterInfo | None = None, template: str = TEMPLATE, trigger_ids: tuple[int, ...] = ()) -> Path:
    """A prompt file as a search or a train run writes it, naming its model by ``name`` and ``model_path``."""
    spec = PromptSpec(template, VERBALIZER, LABELS, ("text",), trigger_ids=trigger_ids)
    model = ModelInfo(name, "causal", weights or backend.weights_hash, model_path, backend.max_length, adapter)
    return export.write_prompt(path, spec, model, scores={}, dataset={}, provenance={}, word_token_ids=_word_ids(backend, template),
                               batch_size=4)


def _edit(path: Path, change) -> Path:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


class _Trap:
    """Unpickled, it creates ``marker``: a pickled weights file that runs code when anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _trap(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Trap(marker)))
    return path


def test_the_trap_fires_when_unpickled(tmp_path) -> None:
    """The pickled files below would leave their marker if anything read them."""
    marker = tmp_path / "ran"
    pickle.loads(_trap(tmp_path / "x.bin", marker).read_bytes())
    assert marker.exists()


@pytest.fixture
def run(tmp_path, tiny_causal_lm, backend) -> Path:
    """A folder as someone hands it over: ``prompt.json`` with its model inside (a ``train`` output)."""
    folder = tmp_path / "shared"
    shutil.copytree(tiny_causal_lm, folder / "model")
    _write(folder / "prompt.json", backend, name="tiny", model_path="model")
    return folder


class _Opened:
    """Spies on what backends asks transformers to open: the arguments of every from_pretrained call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict]] = []
        for name in ("AutoConfig", "AutoTokenizer"):
            monkeypatch.setattr(backends, name, self._spy(name, getattr(backends, name)))
        backend_class, auto_class = backends._BACKENDS["causal"]
        monkeypatch.setitem(backends._BACKENDS, "causal", (backend_class, self._spy("model", auto_class)))

    def _spy(self, what: str, real):
        calls = self.calls

        class Spy:
            @staticmethod
            def from_pretrained(path, **kwargs):
                calls.append((what, kwargs))
                return real.from_pretrained(path, **kwargs)

        return Spy

    @property
    def models(self) -> int:
        return sum(what == "model" for what, _ in self.calls)


# -- 1. no code is run ---------------------------------------------------------------------------
_PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "runpy"}


def code_running_calls(source: str) -> list[str]:
    """What in ``source`` can run code from a file: eval/exec/compile/__import__, pickle-like modules,
    torch.load, yaml's unsafe loaders, pickled numpy or pandas, trust_remote_code other than False,
    weights_only=False."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: import {m}" for m in modules if m.split(".")[0] in _PICKLERS]
        if not isinstance(node, ast.Call):
            continue
        called = ast.unparse(node.func)
        if called in ("eval", "exec", "compile", "__import__", "torch.load", "importlib.import_module", "yaml.load",
                      "yaml.unsafe_load", "yaml.full_load") or called.endswith("read_pickle"):
            found.append(f"line {node.lineno}: {called}()")
        for keyword in node.keywords:
            value = keyword.value.value if isinstance(keyword.value, ast.Constant) else "an expression"
            if (keyword.arg in ("trust_remote_code", "allow_pickle") and value is not False
                    or keyword.arg == "weights_only" and value is not True):
                found.append(f"line {node.lineno}: {called}({keyword.arg}={value})")
    return found


def test_the_source_scan_finds_what_runs_code() -> None:
    sample = ("import pickle\nfrom dill import loads\neval('1')\ntorch.load(f)\nm.from_pretrained(p, trust_remote_code=True)\n"
              "np.load(p, allow_pickle=True)\ntorch.load(f, weights_only=False)\nyaml.load(s)\nmodel.eval()\nre.compile('x')\n")
    assert len(code_running_calls(sample)) == 9  # model.eval() and re.compile are no such calls


def test_the_package_source_has_nothing_that_runs_code_from_a_file() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    found = {str(path.relative_to(PACKAGE)): hits for path in files if (hits := code_running_calls(path.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.mark.parametrize("module", ["backends.py", "predictor.py"])
def test_the_loading_modules_open_models_without_code_and_with_safetensors_only(module) -> None:
    """Every from_pretrained call where load() opens a folder says trust_remote_code=False (with None,
    transformers asks on the terminal whether to run a folder's code); model classes say use_safetensors=True."""
    calls = [node for node in ast.walk(ast.parse((PACKAGE / module).read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"]
    assert len(calls) >= 2
    for call in calls:
        keywords = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
        assert keywords.get("trust_remote_code") is False, ast.unparse(call)
        receiver = ast.unparse(call.func.value)
        if "Tokenizer" not in receiver and "Config" not in receiver:
            assert keywords.get("use_safetensors") is True, ast.unparse(call)


def _with_custom_code(folder: Path, marker: Path, *, model_type: str | None = None) -> Path:
    """A model folder shipping code (importing it leaves ``marker``) that its configs name in auto_map."""
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    for name in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code + "from transformers import *\nEvilConfig = EvilModel = EvilTokenizer = None\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return folder


def _answer_yes(monkeypatch: pytest.MonkeyPatch) -> list:
    """Answer "y" to any question on the terminal (transformers asks whether to run a folder's code)."""
    asked: list = []
    monkeypatch.setattr("builtins.input", lambda *args: asked.append(args) or "y")
    return asked


def test_code_a_model_folder_ships_is_never_imported(run, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "code-ran"
    _with_custom_code(run / "model", marker)
    asked = _answer_yes(monkeypatch)
    predictor = prompt_predictor.load(run, cache=False)  # a known model_type: transformers' own Llama classes
    assert predictor.predict_proba(TEXTS).shape == (4, 2)
    assert type(predictor.scorer.backend.model).__name__ == "LlamaForCausalLM"
    assert not marker.exists() and asked == []
    assert not [name for name in sys.modules if name.endswith("_evil")]


def test_a_model_that_needs_its_own_code_is_refused_without_asking(run, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "code-ran"
    _with_custom_code(run / "model", marker, model_type="evil_llama")
    asked = _answer_yes(monkeypatch)  # what would run the code if transformers asked
    with pytest.raises(UserError) as error:
        prompt_predictor.load(run, cache=False)
    message = str(error.value)
    assert message.startswith(f"{run / 'prompt.json'}: model: cannot load the prompt's model"), message
    assert "auto_map" in message and "never runs code from a model folder" in message
    assert not marker.exists() and asked == []
    with pytest.raises(UserError, match="never runs code"):
        load_backend(run / "model")
    assert not marker.exists() and asked == []


# -- 2. safetensors only -------------------------------------------------------------------------
def test_a_model_folder_with_only_pickled_weights_is_refused(run, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "unpickled"
    (run / "model" / "model.safetensors").unlink()
    _trap(run / "model" / "pytorch_model.bin", marker)
    opened = _Opened(monkeypatch)
    origin = run / "prompt.json"
    with pytest.raises(UserError) as error:
        prompt_predictor.load(origin)
    message = str(error.value)
    assert message.startswith(f"{origin}: model: cannot load the prompt's model (model.path: model folder"), message
    assert "only pickled weights (pytorch_model.bin)" in message and "safetensors" in message
    with pytest.raises(UserError, match=re.escape("only pickled weights (pytorch_model.bin)")):
        prompt_predictor.load(origin, model=run / "model")  # nor when the caller names the folder
    assert not marker.exists() and opened.calls == []


def test_pickled_weights_beside_safetensors_are_never_read(run, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "unpickled"
    _trap(run / "model" / "pytorch_model.bin", marker)

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    opened = _Opened(monkeypatch)
    assert prompt_predictor.load(run, cache=False).predict_proba(TEXTS).shape == (4, 2)
    assert not marker.exists()
    assert {what for what, _ in opened.calls} == {"AutoConfig", "AutoTokenizer", "model"}
    for what, kwargs in opened.calls:  # transformers is told never to fall back to a .bin, nor to run code
        assert kwargs["trust_remote_code"] is False
        assert what != "model" or kwargs["use_safetensors"] is True


def _soft_prompt(folder: Path, hidden: int, *, pickled_only: Path | None = None) -> AdapterInfo:
    """A prompt-tuning adapter folder as PEFT writes it (safetensors), or with a pickle alone."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2}))
    if pickled_only is not None:
        _trap(folder / "adapter_model.bin", pickled_only)
        return AdapterInfo("prompt_tuning", folder.name, "0" * 64)
    save_file({"prompt_embeddings": torch.randn(2, hidden, generator=torch.Generator().manual_seed(0))},
              str(folder / "adapter_model.safetensors"))
    return AdapterInfo("prompt_tuning", folder.name, sha256_file(folder / "adapter_model.safetensors"))


def test_an_adapter_with_only_pickled_weights_is_refused(tmp_path, backend, tiny_causal_lm, monkeypatch) -> None:
    marker = tmp_path / "unpickled"
    adapter = _soft_prompt(tmp_path / "adapter", backend.model.config.hidden_size, pickled_only=marker)
    path = _write(tmp_path / "prompt.json", backend, name=str(tiny_causal_lm), adapter=adapter)
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    message = str(error.value)
    assert "adapter folder" in message and "only pickled weights (adapter_model.bin)" in message, message
    assert not marker.exists() and opened.models == 0


def test_a_lora_adapter_is_read_from_safetensors_not_the_pickle_beside_it(tmp_path, backend, tiny_causal_lm) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, use_safetensors=True)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    marker = tmp_path / "unpickled"
    _trap(tmp_path / "adapter" / "adapter_model.bin", marker)
    adapter = AdapterInfo("lora", "adapter", sha256_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    path = _write(tmp_path / "prompt.json", backend, name=str(tiny_causal_lm), adapter=adapter)
    predictor = prompt_predictor.load(path, cache=False)
    bare = prompt_predictor.load(_write(tmp_path / "bare.json", backend, name=str(tiny_causal_lm)), cache=False)
    assert not (predictor.predict_proba(TEXTS) == bare.predict_proba(TEXTS)).all()  # the LoRA weights were put on
    assert not marker.exists()


# -- 3. the hashes, before the model is opened --------------------------------------------------------
def test_other_weights_are_refused_before_the_model_is_opened(run, monkeypatch) -> None:
    path = _edit(run / "prompt.json", lambda d: d["model"].update(weights_sha256="0" * 64))
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError, match=re.escape(f"{path}: model.weights_sha256: the prompt was found on another model")):
        prompt_predictor.load(path)
    assert opened.calls == []  # refused before transformers read anything in the folder
    with pytest.warns(UserWarning, match="found on another model"):  # the one override, and never silent
        assert prompt_predictor.load(path, cache=False, strict=False).predict_proba(TEXTS).shape == (4, 2)


def test_other_adapter_weights_are_refused_before_the_model_is_opened(tmp_path, backend, tiny_causal_lm, monkeypatch) -> None:
    adapter = _soft_prompt(tmp_path / "adapter", backend.model.config.hidden_size)
    path = _write(tmp_path / "prompt.json", backend, name=str(tiny_causal_lm), adapter=adapter)
    assert prompt_predictor.load(path, cache=False).scorer.backend.virtual_tokens == 2
    changed = tmp_path / "adapter" / "adapter_model.safetensors"
    save_file({"prompt_embeddings": torch.zeros(2, backend.model.config.hidden_size)}, str(changed))
    opened = _Opened(monkeypatch)
    for strict in (True, False):  # no override for an adapter: its file changed since the prompt file was written
        with pytest.raises(UserError, match=re.escape(f"{changed}: its contents differ")):
            prompt_predictor.load(path, strict=strict)
    assert opened.calls == []


def test_a_model_given_by_the_caller_is_still_compared_with_the_file(run, tmp_path, backend) -> None:
    other = tmp_path / "other"
    shutil.copytree(run / "model", other)
    save_file({name: tensor + 1 for name, tensor in backend.model.state_dict().items()}, str(other / "model.safetensors"))
    with pytest.raises(UserError, match="model.weights_sha256: the prompt was found on another model"):
        prompt_predictor.load(run / "prompt.json", model=other)


# -- 4. paths ----------------------------------------------------------------------------------------
@pytest.fixture
def outside(tmp_path, tiny_causal_lm) -> Path:
    """A model folder beside the shared folder, with the very weights the file records."""
    shutil.copytree(tiny_causal_lm, tmp_path / "outside")
    return tmp_path / "outside"


@pytest.mark.parametrize("value", ["../outside", "model/../../outside", "./../outside"])
def test_a_relative_path_out_of_the_files_folder_is_refused(run, outside, monkeypatch, value) -> None:
    shutil.rmtree(run / "model")
    path = _edit(run / "prompt.json", lambda d: d["model"].update(path=value))
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    assert str(error.value).startswith(f"{path}: model.path: {value!r} leads to {outside}, outside the file's folder"), str(error.value)
    assert opened.calls == []


def test_a_link_out_of_the_files_folder_is_refused(run, outside, monkeypatch) -> None:
    shutil.rmtree(run / "model")
    (run / "model").symlink_to(outside)  # the folder itself
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError, match=re.escape(f"{run / 'prompt.json'}: model.path: 'model' leads to {outside}, outside")):
        prompt_predictor.load(run)
    (run / "model").unlink()
    shutil.copytree(outside, run / "model")
    for target in (outside / "model.safetensors", Path("/dev/zero")):  # a file inside it
        (run / "model" / "model.safetensors").unlink()
        (run / "model" / "model.safetensors").symlink_to(target)
        with pytest.raises(UserError, match=re.escape(f"{run / 'prompt.json'}: model.path: {run / 'model' / 'model.safetensors'} "
                                                      f"is a link to {target}, outside the file's folder")):
            prompt_predictor.load(run)
    assert opened.calls == []


def test_a_fifo_in_a_shared_folder_is_refused(run) -> None:
    os.mkfifo(run / "model" / "extra.safetensors")  # hashing it would wait forever
    with pytest.raises(UserError, match=re.escape(f"model.path: {run / 'model' / 'extra.safetensors'} is not a regular file")):
        prompt_predictor.load(run)


def test_paths_that_stay_inside_are_followed(run, tmp_path) -> None:
    _edit(run / "prompt.json", lambda d: d["model"].update(path="model/../model"))
    assert prompt_predictor.load(run, cache=False).classes_ == list(LABELS)
    (run / "model" / "tokenizer_copy.json").symlink_to(run / "model" / "tokenizer.json")  # a link that stays inside
    (tmp_path / "link").symlink_to(run)  # the shared folder reached through a link
    assert prompt_predictor.load(tmp_path / "link" / "prompt.json", cache=False).classes_ == list(LABELS)


@pytest.mark.parametrize("value", ["/tmp/adapter", "../adapter", "adapter/../../adapter"])
def test_an_adapter_path_out_of_the_files_folder_is_refused(tmp_path, backend, tiny_causal_lm, monkeypatch, value) -> None:
    adapter = _soft_prompt(tmp_path / "adapter", backend.model.config.hidden_size)
    path = _write(tmp_path / "shared" / "prompt.json", backend, name=str(tiny_causal_lm),
                  adapter=AdapterInfo(adapter.method, value, adapter.sha256))
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    assert str(error.value).startswith(f"{path}: model.adapter.path: {value!r}"), str(error.value)
    assert opened.calls == []


def test_a_relative_model_name_is_not_looked_up_where_the_caller_stands(tmp_path, tiny_causal_lm, backend, monkeypatch) -> None:
    """A name that is neither registered nor absolute would be read from the current folder: refused."""
    shutil.copytree(tiny_causal_lm, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    for name in ("tiny", "./tiny", "~/tiny"):
        path = _write(tmp_path / "shared" / "prompt.json", backend, name=name)
        with pytest.raises(UserError, match=re.escape(f"{path}: model: cannot load the prompt's model (model.name {name!r} is "
                                                      "neither a registered model")):
            prompt_predictor.load(path)
    assert prompt_predictor.load(path, model="tiny", cache=False).classes_ == list(LABELS)  # the caller may name it


def test_a_registered_name_is_read_through_the_registry_not_the_recorded_folder(tmp_path, tiny_causal_lm, backend,
                                                                                  monkeypatch) -> None:
    registered = tmp_path / "cache-folder"
    shutil.copytree(tiny_causal_lm, registered)
    elsewhere = tmp_path / "elsewhere"  # what model.path names: not read
    elsewhere.mkdir()
    _trap(elsewhere / "pytorch_model.bin", tmp_path / "unpickled")
    fetched = []
    monkeypatch.setattr(assets, "fetch", lambda name, **kwargs: fetched.append(name) or registered)
    path = _write(tmp_path / "best.json", backend, name="smollm2-135m", model_path=str(elsewhere))
    predictor = prompt_predictor.load(path, cache=False)
    assert fetched == ["smollm2-135m"] and predictor.scorer.backend.path == registered
    assert not (tmp_path / "unpickled").exists()


def test_an_absolute_folder_is_opened_only_with_the_recorded_weights(tmp_path, outside, backend, monkeypatch) -> None:
    """A search's own best.json names its model by absolute folder: followed, after its weights hash."""
    path = _write(tmp_path / "best.json", backend, name="/no/such/name", model_path=str(outside))
    assert prompt_predictor.load(path, cache=False).scorer.backend.path == outside
    save_file({name: tensor * 2 for name, tensor in backend.model.state_dict().items()}, str(outside / "model.safetensors"))
    opened = _Opened(monkeypatch)
    with pytest.raises(UserError, match="model.weights_sha256: the prompt was found on another model"):
        prompt_predictor.load(path)
    assert opened.calls == []


# -- 5. tampered files ---------------------------------------------------------------------------
def _set(keys: str, value):
    def change(document: dict) -> None:
        *parents, last = keys.split(".")
        for key in parents:
            document = document[key]
        document[last] = value
    return change


TAMPERED = [
    ("newer version", _set("format_version", FORMAT_VERSION + 1), f"format_version: the file has version {FORMAT_VERSION + 1}"),
    ("huge version", _set("format_version", 10**40), f"format_version: the file has version {10**40}"),
    ("version float", _set("format_version", 1.0), "format_version: expected a positive integer"),
    ("huge batch size", _set("model.batch_size", 10**30), f"model.batch_size: expected a positive integer up to {MAX_COUNT}"),
    ("chunk size string", _set("model.chunk_size", "5"), "model.chunk_size: expected a positive integer"),
    ("negative max length", _set("model.max_length", -3), "model.max_length: expected a positive integer"),
    ("max length bool", _set("model.max_length", True), "model.max_length: expected a positive integer"),
    ("model path type", _set("model.path", 5), "model.path: expected a string, got int 5"),
    ("model name null", _set("model.name", None), "model.name: expected a string, got NoneType null"),
    ("hash type", _set("model.weights_sha256", ["0"]), "model.weights_sha256: expected a string"),
    ("adapter path type", _set("model.adapter", {"method": "lora", "path": ["x"], "sha256": "0"}), "model.adapter.path: expected a string"),
    ("adapter hash null", _set("model.adapter", {"method": "lora", "path": "a", "sha256": None}),
     "model.adapter.sha256: expected a string"),
    ("bias infinite", _set("prompt.calibration", {"method": "prior", "bias": [1e999, 0.0]}),
     "prompt.calibration.bias: expected a list of finite numbers, got list [Infinity, 0.0]"),
    ("bias nan", _set("prompt.calibration", {"method": "prior", "bias": [float("nan"), 0.0]}),
     "prompt.calibration.bias: expected a list of finite"),
    ("bias huge integer", _set("prompt.calibration", {"method": "prior", "bias": [10**400, 0]}), "prompt.calibration.bias: expected"),
    ("huge trigger id", _set("prompt.trigger_ids", [10**30]), "prompt.trigger_ids: expected a list of token ids"),
    ("negative trigger id", _set("prompt.trigger_ids", [-1]), "prompt.trigger_ids: expected a list of token ids"),
    ("trigger id type", _set("prompt.trigger_ids", ["5"]), "prompt.trigger_ids: expected a list of token ids"),
    ("template type", _set("prompt.template", {"x": 1}), "prompt.template: expected a string"),
    ("words type", _set("prompt.verbalizer", {"negative": "bad", "positive": ["good"]}), "prompt.verbalizer: expected a mapping"),
    ("word ids type", _set("word_token_ids", [[1]]), "word_token_ids: expected a mapping from label to lists of token ids"),
]


@pytest.mark.parametrize("change, expected", [case[1:] for case in TAMPERED], ids=[case[0] for case in TAMPERED])
def test_tampered_fields_name_the_file_and_the_field(tmp_path, backend, tiny_causal_lm, change, expected) -> None:
    path = _write(tmp_path / "best.json", backend, name=str(tiny_causal_lm), template=TRIGGER_TEMPLATE, trigger_ids=(5,))
    _edit(path, change)
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    assert str(error.value).startswith(f"{path}: {expected}"), str(error.value)


@pytest.mark.parametrize("weight, shown", [(float("nan"), "NaN"), (1e999, "Infinity"), (10**400, "1000")])
def test_tampered_ensemble_weights(tmp_path, backend, tiny_causal_lm, weight, shown) -> None:
    single = json.loads(_write(tmp_path / "best.json", backend, name=str(tiny_causal_lm)).read_text())
    member = {"prompt": single["prompt"], "weight": 1.0}
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({**single, "kind": "ensemble", "members": [member, {**member, "weight": weight}]}))
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    assert str(error.value).startswith(f"{path}: members[1].weight: expected a finite number, got "), str(error.value)
    assert shown in str(error.value)


def test_a_trigger_id_outside_the_vocabulary_is_refused_before_predicting(tmp_path, backend, tiny_causal_lm) -> None:
    path = _write(tmp_path / "best.json", backend, name=str(tiny_causal_lm), template=TRIGGER_TEMPLATE, trigger_ids=(5,))
    _edit(path, _set("prompt.trigger_ids", [100_000]))
    vocabulary = backend.model.get_input_embeddings().weight.shape[0]
    with pytest.raises(UserError, match=re.escape(f"{path}: prompt.trigger_ids: token id 100000 is outside the model's vocabulary "
                                                  f"of {vocabulary} tokens")):
        prompt_predictor.load(path)


@pytest.mark.parametrize("content, expected", [
    ("[" * 100_000 + "]" * 100_000, "its JSON is nested too deeply"),
    ('{"format": ' + "9" * 5000 + "}", "not a prompt file (such as best.json): Exceeds the limit"),
    ('"a string"', "expected a JSON object at the top level, got str"),
    ("\xff\xfe", "not UTF-8 text"),
])
def test_unreadable_json_is_a_user_error(tmp_path, content, expected) -> None:
    path = tmp_path / "best.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(UserError) as error:
        prompt_predictor.load(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value), str(error.value)


def test_a_huge_file_is_not_read(tmp_path) -> None:
    path = tmp_path / "best.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(UserError, match=re.escape(f"{path}: {MAX_FILE_BYTES + 1} bytes, too large for a prompt file")):
        prompt_predictor.load(path)


# -- a train --method head output (classifier.json) -----------------------------------------------------
@pytest.fixture
def head(tmp_path, tiny_causal_lm) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "head"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_causal_lm, num_labels=2, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "classifier.json").write_text(json.dumps({
        "format": prompt_predictor.CLASSIFIER_FORMAT, "labels": list(LABELS), "fields": ["text"], "max_length": 64, "batch_size": 4,
        "model": {"path": "model", "weights_sha256": assets.model_weights_hash(folder / "model"), "base": str(tiny_causal_lm)}}))
    return folder


def test_a_classifier_loads_and_predicts(head) -> None:
    predictor = prompt_predictor.load(head, device="cpu")
    assert isinstance(predictor, prompt_predictor.HeadPredictor) and predictor.predict_proba(TEXTS).shape == (4, 2)


CLASSIFIER_TAMPERED = [
    ("newer version", _set("format_version", 2), "format_version: the file has version 2"),
    ("labels type", _set("labels", "negative"), "labels: expected a list of strings"),
    ("fields empty", _set("fields", []), "fields: expected at least one field name"),
    ("huge max length", _set("max_length", 10**20), "max_length: expected a positive integer up to"),
    ("batch size string", _set("batch_size", "32"), "batch_size: expected a positive integer"),
    ("model type", _set("model", "model"), "model: expected a mapping"),
    ("path out", _set("model.path", "../outside"), "model.path: '../outside' leads to"),
    ("path absolute", _set("model.path", "/tmp"), "model.path: '/tmp' is an absolute path"),
    ("other weights", _set("model.weights_sha256", "0" * 64), "model.weights_sha256: the weights in"),
]


@pytest.mark.parametrize("change, expected", [case[1:] for case in CLASSIFIER_TAMPERED], ids=[case[0] for case in CLASSIFIER_TAMPERED])
def test_a_tampered_classifier_names_the_file_and_the_field(head, monkeypatch, change, expected) -> None:
    import transformers

    shutil.copytree(head / "model", head.parent / "outside")
    _edit(head / "classifier.json", change)
    opened = []
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        classmethod(lambda cls, *args, **kwargs: opened.append(args)))
    with pytest.raises(UserError) as error:
        prompt_predictor.load(head)
    assert str(error.value).startswith(f"{head / 'classifier.json'}: {expected}"), str(error.value)
    assert opened == []  # refused before the model was opened


def test_a_classifier_with_only_pickled_weights_is_refused(head, tmp_path) -> None:
    (head / "model" / "model.safetensors").unlink()
    _trap(head / "model" / "pytorch_model.bin", tmp_path / "unpickled")
    with pytest.raises(UserError, match=re.escape(f"{head / 'classifier.json'}: model.path: model folder {head / 'model'} has only "
                                                  "pickled weights (pytorch_model.bin)")):
        prompt_predictor.load(head)
    assert not (tmp_path / "unpickled").exists()


def test_a_path_that_is_no_path_is_refused(run) -> None:
    path = _edit(run / "prompt.json", lambda d: d["model"].update(path="mo\x00del"))
    with pytest.raises(UserError, match=re.escape(f"{path}: model.path: 'mo\\x00del' is not a usable path")):
        prompt_predictor.load(path)
