"""Trained PEFT adapters applied to a loaded backend: LoRA weights (through PEFT, which injects them
into the model's layers) or a soft prompt (prompt tuning: its virtual-token embeddings, read from
the adapter's safetensors file, go before every prompt; see :meth:`Backend.forward_slot_logits`).

The folders are the standard ones PEFT writes and ``PeftModel.from_pretrained`` opens; weights
are read from safetensors only.
"""

from __future__ import annotations

from pathlib import Path

from autoprompt_search.backends import Backend
from autoprompt_search.errors import UserError
from autoprompt_search.fileio import read_json, sha256_file, sha256_text

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROMPT_EMBEDDINGS = "prompt_embeddings"  # PEFT's key for a prompt-tuning adapter's virtual tokens
PEFT_TYPES = {"lora": "LORA", "prompt_tuning": "PROMPT_TUNING"}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}  # weights torch.load would unpickle: never read
TRAIN_EXTRA = "pip install 'autoprompt-search[train]'"


def import_peft():
    """The ``peft`` package, or a user error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise UserError(f"this needs PEFT, which is not installed: {TRAIN_EXTRA}") from None
    return peft


def check_adapter_folder(folder: Path, method: str, sha256: str | None = None) -> None:
    """A user error naming what is wrong with an adapter folder (missing files, another method, other weights)."""
    if not folder.is_dir():
        raise UserError(f"adapter folder {folder}: no such folder")
    if not (folder / ADAPTER_WEIGHTS).is_file() and (pickled := sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)):
        raise UserError(f"adapter folder {folder}: it has only pickled weights ({', '.join(pickled)}): for safety only "
                        f"{ADAPTER_WEIGHTS} is loaded; save the adapter with safetensors (PEFT's default)")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise UserError(f"adapter folder {folder}: {name} is missing")
    config = read_json(folder / ADAPTER_CONFIG, "PEFT adapter config")
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != PEFT_TYPES[method]:
        raise UserError(f"{folder / ADAPTER_CONFIG}: peft_type: expected {PEFT_TYPES[method]!r} for a {method} adapter, got {peft_type!r}")
    if sha256 is not None and sha256_file(folder / ADAPTER_WEIGHTS) != sha256:
        raise UserError(f"{folder / ADAPTER_WEIGHTS}: its contents differ from the ones the prompt file recorded (sha256 {sha256[:12]}...)")


def apply_adapter(backend: Backend, folder: str | Path, method: str, sha256: str | None = None) -> None:
    """Put the adapter of ``folder`` on ``backend`` (in place) and give the backend a weights hash
    that covers it, so slot-cache entries of the bare model are never read for it."""
    folder = Path(folder)
    check_adapter_folder(folder, method, sha256)
    if method == "prompt_tuning":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(folder / ADAPTER_WEIGHTS))
        except (OSError, SafetensorError) as error:
            raise UserError(f"{folder / ADAPTER_WEIGHTS}: not a readable safetensors file ({error})") from None
        embeddings = tensors.get(PROMPT_EMBEDDINGS)
        hidden = backend.model.get_input_embeddings().weight.shape[1]
        if embeddings is None or embeddings.dim() != 2 or embeddings.shape[1] != hidden:
            raise UserError(f"{folder / ADAPTER_WEIGHTS}: expected a {PROMPT_EMBEDDINGS!r} tensor [virtual tokens, {hidden}]")
        backend.soft_prompt = embeddings.float().to(backend.device)
    else:
        peft = import_peft()
        try:
            # Injects the LoRA layers into backend.model. PEFT reads adapter_model.safetensors when it is there
            # (checked above, with its hash), and never the pickled adapter_model.bin beside it.
            peft.PeftModel.from_pretrained(backend.model, str(folder))
        except (ValueError, KeyError, OSError, RuntimeError) as error:  # a config or weights that do not fit the model
            raise UserError(f"adapter folder {folder}: PEFT cannot put it on the model ({error})") from None
        backend.model.eval().requires_grad_(False)
    backend.set_weights_hash(sha256_text(f"{backend.weights_hash}+{method}:{sha256_file(folder / ADAPTER_WEIGHTS)}"))
