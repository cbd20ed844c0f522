"""``autoprompt-search train``: parse the arguments, call :func:`autoprompt_search.training.train`,
print what was chosen and how it scored."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from autoprompt_search.training.methods import DEFAULT_LEARNING_RATES, METHODS, SOFT_INITS
    from autoprompt_search.training.run import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
    from autoprompt_search.training.source import STARTS

    rates = ", ".join(f"{method} {rate:g}" for method, rate in DEFAULT_LEARNING_RATES.items())
    parser = subparsers.add_parser(
        "train", help="train a model from a found prompt (prompt-based fine-tuning, LoRA, soft prompt, head baseline)",
        description="Train on a search run's own few-shot split, starting from its prompt; the epoch best on dev is kept "
                    "and scored on the run's held-out test split. Needs the [train] extra for LoRA and soft prompts.")
    parser.add_argument("source", help="a search run folder, or a prompt/ensemble JSON inside one")
    parser.add_argument("--method", choices=METHODS, default="full",
                        help="full: all weights on the prompt's objective; lora: LoRA adapters (PEFT); soft: virtual tokens "
                             "before the template (PEFT prompt tuning), model frozen; head: classification head, no prompt "
                             "(default: full)")
    parser.add_argument("--out", required=True, help="output folder (must not exist, unless --resume)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"passes over the train split (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--learning-rate", type=float, help=f"peak learning rate, decayed linearly (default: {rates})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"examples per step (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--seed", type=int, help="seed of the example order, dropout and new weights (default: the run's seed)")
    parser.add_argument("--start", choices=STARTS, default="best", help="train the run's best prompt or its best manual prompt")
    parser.add_argument("--member", type=int, metavar="N",
                        help="train the N-th distinct prompt of the run's ensemble (or of the ensemble JSON given) in the "
                             "search's ranking, 1 being its top prompt, members that differ only in calibration counting once; "
                             "train several and average them with combine (default: the best prompt, or an ensemble file's "
                             "member of largest weight)")
    parser.add_argument("--init", choices=SOFT_INITS, default="text",
                        help="soft prompts: start the virtual tokens from the prompt's own words (text), at random, or from the "
                             "words of the run's best manual prompt (default: text)")
    parser.add_argument("--refit", action="store_true",
                        help="after choosing the epoch on dev, train again from the start on train+dev up to that epoch (same "
                             "schedule) and keep that model; its dev score is then in-sample, test stays held out")
    parser.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoprompt_search.training import train
    from autoprompt_search.training.loop import selection_accuracy

    result = train(args.source, args.method, out=args.out, epochs=args.epochs, learning_rate=args.learning_rate,
                   batch_size=args.batch_size, seed=args.seed, start=args.start, member=args.member, init=args.init,
                   refit=args.refit, resume=args.resume, device=args.device)
    print(f"\n{'epoch':>5} {'train loss':>10} {'dev acc':>8} {'dev loss':>8}")
    for row in result.curve:
        loss = "" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        chosen = "  <- kept" if row["epoch"] == result.best_epoch else ""
        competes = selection_accuracy(row)
        capped = f"  (competes as {competes:.4f})" if competes != row["dev_accuracy"] else ""
        print(f"{row['epoch']:>5} {loss:>10} {row['dev_accuracy']:>8.4f} {row['dev_loss']:>8.4f}{capped}{chosen}")
    if result.best_epoch == 0 and (note := result.epoch_zero_note):
        print(f"kept epoch 0: {note}" + ("; nothing to refit" if args.refit else ""))
    if result.refit_curve:
        print(f"epoch {result.best_epoch} chosen on dev above; the model written was trained again on train+dev to that epoch "
              f"({result.refit_curve[-1]['step']} steps): the dev figures below are in-sample")
    print()
    for split in ("train", "dev", "test"):
        scores = result.scores[split]
        print(f"{split:<6} accuracy {scores['accuracy']:.4f}   macro-F1 {scores['macro_f1']:.4f}   n={scores['n']}")
    print(f"\nwrote {result.folder} ({result.timings['total_seconds']:.0f} s, peak memory {result.timings['peak_memory_mib']:.0f} MiB)")
    return 0
