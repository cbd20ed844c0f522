"""Command-line options shared by several subcommands, and turning them into arguments."""

from __future__ import annotations

import argparse
from typing import Any

from autoprompt_search.backends import MODEL_KINDS, PRECISION_CHOICES


def add_data_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=required, help="a registered name (mr, rt, subj, bbc, tweets) or a CSV/TSV/JSONL/JSON file")
    group.add_argument("--text-field", action="append", dest="text_fields", metavar="COLUMN",
                       help="text column of a data file (repeat for several; default: text)")
    group.add_argument("--label-field", metavar="COLUMN", help="label column of a data file (default: label)")
    group.add_argument("--labels", help="comma-separated label names of a data file, in order (default: sorted values)")
    group.add_argument("--test-fraction", type=float, help="share of a data file held out as test (default 0.2)")


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = "smollm2-135m") -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=default, help="a registered name or a local Hugging Face folder (default: %(default)s)")
    group.add_argument("--model-kind", choices=MODEL_KINDS, help="override the detected kind")
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--max-length", type=int, help="tokens per prompt (default 256 or the model's limit)")
    group.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    group.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
                       help="bfloat16 runs the model's matrix products in bfloat16: about twice as fast on CPUs with "
                            "AVX512-BF16 or AMX and on GPUs, with slot scores that differ slightly from float32's; "
                            "auto: bfloat16 where the device has it natively, else float32 (default: %(default)s)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk slot cache")


def data_options(args: argparse.Namespace, *, check: bool = True) -> dict[str, Any]:
    """The data-file options given, as arguments; ``check``: values out of range are user errors."""
    options: dict[str, Any] = {}
    if args.text_fields:
        options["text_fields"] = args.text_fields
    if args.label_field is not None:  # given, even as the default name: a search space must refuse it
        options["label_field"] = args.label_field
    if args.labels:
        options["labels"] = [label.strip() for label in args.labels.split(",") if label.strip()]
    if args.test_fraction is not None:
        if check:
            from autoprompt_search.data import check_test_fraction

            check_test_fraction(args.test_fraction)  # named as the option, before the space that would take it
        options["test_fraction"] = args.test_fraction
    return options


def starting_space_from(args: argparse.Namespace) -> dict[str, Any]:
    """The generic starting space (:mod:`autoprompt_search.starter`) of the data options' dataset."""
    from autoprompt_search.starter import space_for_data

    return space_for_data(args.dataset, **data_options(args))


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    from autoprompt_search.errors import UserError
    from autoprompt_search.space_types import MIN_MAX_LENGTH

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.max_length is not None and args.max_length < MIN_MAX_LENGTH:  # 0 must not quietly mean "the default"
        raise UserError(f"--max-length must be at least {MIN_MAX_LENGTH} tokens, got {args.max_length}")
    return {"kind": args.model_kind, "device": args.device, "batch_size": args.batch_size, "max_length": args.max_length,
            "precision": args.precision}


def slot_cache(args: argparse.Namespace):
    from autoprompt_search.cache import SlotCache, default_cache_dir

    return SlotCache(None if args.no_cache else default_cache_dir())
