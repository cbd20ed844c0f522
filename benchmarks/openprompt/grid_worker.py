"""OpenPrompt 1.0.1's side of benchmarks/bench_openprompt.py; runs in .venv-openprompt, not in ours.

It scores a grid of templates x verbalizers the way OpenPrompt's tutorials do: one
``PromptDataLoader`` per template (built once and reused, which favours OpenPrompt), and for
each verbalizer a ``PromptForClassification`` over the frozen model, run on every batch with
``torch.no_grad()``. Reads a JSON job from argv[1], writes a JSON result to argv[2]. Our package
is not importable here; this file imports only OpenPrompt, transformers and torch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from openprompt import PromptDataLoader, PromptForClassification
from openprompt.data_utils import InputExample
from openprompt.plms import LMTokenizerWrapper
from openprompt.prompts import ManualTemplate, ManualVerbalizer
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Tokenizer


def openprompt_template(template: str) -> str:
    """``{text} It was {mask}`` in OpenPrompt's syntax."""
    return template.replace("{text}", '{"placeholder":"text_a"}').replace("{mask}", '{"mask"}')


def gpt2_tokenizer(folder: Path, scratch: Path, config: dict) -> GPT2Tokenizer:
    """OpenPrompt's wrappers need a slow tokenizer (as its own ``load_plm("gpt2")`` gives). SmolLM2's
    tokenizer is GPT-2's byte-level BPE with GPT-2's regex, no normalizer and no added specials,
    so the slow GPT2Tokenizer on the same vocabulary and merges tokenizes identically."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert spec["normalizer"] is None and not spec["post_processor"]["special_tokens"]
    (scratch / "vocab.json").write_text(json.dumps(spec["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [pair if isinstance(pair, str) else " ".join(pair) for pair in spec["model"]["merges"]]
    (scratch / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return GPT2Tokenizer(str(scratch / "vocab.json"), str(scratch / "merges.txt"), unk_token=config["unk_token"],
                         bos_token=config["bos_token"], eos_token=config["eos_token"], pad_token=config["pad_token"])


def legacy_config(folder: Path) -> AutoConfig:
    """The model's config as transformers 4.39 needs it: transformers 5 writes RoPE's base under
    ``rope_parameters``, where 4.39 does not look (it would silently use 10,000 instead of 100,000)."""
    config = AutoConfig.from_pretrained(folder)
    rope = json.loads((folder / "config.json").read_text()).get("rope_parameters")
    if rope:
        assert rope.get("rope_type", "default") == "default", rope
        config.rope_theta = rope["rope_theta"]
    return config


def load_plm(folder: Path, scratch: Path):
    """The tokenizer and the model of our local folder, as transformers 4.x reads them (eval mode)."""
    tokenizer = gpt2_tokenizer(folder, scratch, json.loads((folder / "tokenizer_config.json").read_text()))
    plm = AutoModelForCausalLM.from_pretrained(folder, config=legacy_config(folder), torch_dtype=torch.float32)
    return tokenizer, plm.eval()


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    began = time.perf_counter()
    tokenizer, plm = load_plm(Path(job["model_folder"]), Path(sys.argv[2]).parent)
    examples = [InputExample(guid=i, text_a=e["text"], label=e["label"]) for i, e in enumerate(job["examples"])]
    setup_seconds = time.perf_counter() - began

    pairs = []
    for t, template_text in enumerate(job["templates"]):
        began = time.perf_counter()
        template = ManualTemplate(tokenizer=tokenizer, text=openprompt_template(template_text))
        loader = PromptDataLoader(dataset=examples, template=template, tokenizer=tokenizer,
                                  tokenizer_wrapper_class=LMTokenizerWrapper, max_seq_length=job["max_seq_length"],
                                  batch_size=job["batch_size"], shuffle=False)
        loader_seconds = time.perf_counter() - began
        for v in job["pairs"][str(t)]:
            began = time.perf_counter()
            verbalizer = ManualVerbalizer(tokenizer, classes=job["labels"], label_words=job["verbalizers"][v])
            model = PromptForClassification(plm=plm, template=template, verbalizer=verbalizer, freeze_plm=True)
            model.eval()
            predictions = []
            with torch.no_grad():
                for batch in loader:
                    predictions.extend(model(batch).argmax(dim=-1).tolist())
            seconds = time.perf_counter() - began
            gold = [e["label"] for e in job["examples"]]
            pairs.append({"template": t, "verbalizer": v, "seconds": seconds, "loader_seconds": loader_seconds,
                          "predictions": predictions, "accuracy": sum(p == g for p, g in zip(predictions, gold)) / len(gold)})
            print(f"openprompt: template {t} verbalizer {v}: {seconds:.1f} s, accuracy {pairs[-1]['accuracy']:.4f}", flush=True)
    import openprompt
    import transformers

    Path(sys.argv[2]).write_text(json.dumps({
        "setup_seconds": setup_seconds, "pairs": pairs,
        "versions": {"openprompt": getattr(openprompt, "__version__", "1.0.1"), "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
