"""OpenPrompt 1.0.1's side of benchmarks/bench_openprompt_export.py; runs in .venv-openprompt, not in ours.

It takes the ``exports.openprompt`` form of a prompt file as it is and builds from it what
OpenPrompt's documentation builds: ``ManualTemplate(text=template_text)`` (``MixedTemplate`` when
``template_class`` says so), ``ManualVerbalizer(classes=classes, label_words=label_words,
prefix=verbalizer_prefix)``, ``InputExample`` objects whose fields go where ``field_map`` says
(``text_a``, ``text_b`` or ``meta.NAME``), one ``PromptDataLoader`` and one
``PromptForClassification`` over the frozen model, run with ``torch.no_grad()``.

Reads a JSON job from argv[1]; writes to argv[2] each example's class logits (OpenPrompt's
``ManualVerbalizer`` output: log-probabilities over the label words, averaged per class), its
prediction, and the token ids the model saw up to the mask, with what OpenPrompt made of the
label words. Our package is not importable here; this file imports only OpenPrompt,
transformers, torch and grid_worker.py's model loading (the same local folder, the same way).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from grid_worker import load_plm  # this folder is sys.path[0] when run as a script
from openprompt import PromptDataLoader, PromptForClassification
from openprompt.data_utils import InputExample
from openprompt.plms import LMTokenizerWrapper
from openprompt.prompts import ManualTemplate, ManualVerbalizer, MixedTemplate


def input_example(guid: int, fields: dict[str, str], field_map: dict[str, str]) -> InputExample:
    """An InputExample with each field where the form's ``field_map`` puts it."""
    slots: dict = {"text_a": "", "text_b": "", "meta": {}}
    for name, target in field_map.items():
        if target.startswith("meta."):
            slots["meta"][target[len("meta."):]] = fields[name]
        elif target in ("text_a", "text_b"):
            slots[target] = fields[name]
        else:
            raise SystemExit(f"field_map: {name!r} -> {target!r} is neither text_a, text_b nor meta.NAME")
    return InputExample(guid=guid, **slots)


def build_template(form: dict, tokenizer, plm):
    """The form's template; a MixedTemplate gets the found trigger tokens' embeddings in its soft
    slots, in order, as the form's note says to do."""
    if form["template_class"] == "ManualTemplate":
        return ManualTemplate(tokenizer=tokenizer, text=form["template_text"])
    if form["template_class"] != "MixedTemplate":
        raise SystemExit(f"template_class {form['template_class']!r}: expected ManualTemplate or MixedTemplate")
    template = MixedTemplate(model=plm, tokenizer=tokenizer, text=form["template_text"])
    triggers = form.get("trigger_token_ids") or []
    if template.num_soft_token != len(triggers):
        raise SystemExit(f"MixedTemplate has {template.num_soft_token} soft tokens, the form {len(triggers)} trigger_token_ids")
    with torch.no_grad():
        for soft_id, token in enumerate(triggers, start=1):
            template.soft_embedding.weight[soft_id] = plm.get_input_embeddings().weight[token]
    return template


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    form = job["form"]
    if job["model_kind"] != "causal":
        raise SystemExit(f"model kind {job['model_kind']!r}: this worker runs causal models (LMTokenizerWrapper) only")
    torch.set_num_threads(job["threads"])

    began = time.perf_counter()
    tokenizer, plm = load_plm(Path(job["model_folder"]), Path(sys.argv[2]).parent)
    template = build_template(form, tokenizer, plm)
    verbalizer = ManualVerbalizer(tokenizer, classes=form["classes"], label_words=form["label_words"],
                                  prefix=form["verbalizer_prefix"])
    model = PromptForClassification(plm=plm, template=template, verbalizer=verbalizer, freeze_plm=True)
    model.eval()
    examples = [input_example(i, fields, form["field_map"]) for i, fields in enumerate(job["examples"])]
    setup_seconds = time.perf_counter() - began

    began = time.perf_counter()
    loader = PromptDataLoader(dataset=examples, template=template, tokenizer=tokenizer, tokenizer_wrapper_class=LMTokenizerWrapper,
                              max_seq_length=job["max_seq_length"], batch_size=job["batch_size"], shuffle=False)
    loader_seconds = time.perf_counter() - began
    # The ids the model reads up to the mask (the prediction is the next token's); a soft position
    # holds id 0 and reads its own embedding, which build_template made the trigger token's: it is
    # written as that trigger's id.
    triggers = form.get("trigger_token_ids") or []
    contexts = []
    for feature in loader.tensor_dataset:
        ids, loss = feature["input_ids"].tolist(), feature["loss_ids"].tolist()
        soft = feature["soft_token_ids"].tolist() if feature["soft_token_ids"] is not None else [0] * len(ids)
        ids = [triggers[s - 1] if s else token for token, s in zip(ids, soft)]
        contexts.append(ids[: loss.index(1) + 1] if 1 in loss else [])

    began = time.perf_counter()
    rows = []
    with torch.no_grad():
        for batch in loader:
            rows.append(model(batch))
    logits = torch.cat(rows)
    inference_seconds = time.perf_counter() - began

    # What OpenPrompt made of the label words: their (prefixed) text and token ids.
    words = {label: [{"text": text, "token_ids": tokenizer.encode(text, add_special_tokens=False)} for text in texts]
             for label, texts in zip(form["classes"], verbalizer.label_words)}
    import openprompt
    import transformers

    Path(sys.argv[2]).write_text(json.dumps({
        "class_logits": logits.double().tolist(), "predictions": logits.argmax(dim=-1).tolist(),
        "contexts": contexts, "label_words": words, "multi_token_handler": verbalizer.multi_token_handler,
        "template_class": type(template).__name__, "max_seq_length": job["max_seq_length"],
        "seconds": {"setup": setup_seconds, "loader": loader_seconds, "inference": inference_seconds},
        "versions": {"openprompt": getattr(openprompt, "__version__", "1.0.1"), "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
    }), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
