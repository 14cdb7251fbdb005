"""`moviechat-train train` (a run, or --resume one) and `moviechat-train export` (a checkpoint as a model spec)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.cli_common import UsageError


def add_train_command(subparsers) -> argparse.ArgumentParser:
    from trainer.config import TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser("train", help="fine-tune a base model (full or LoRA); the output dir is a model spec")
    parser.add_argument("--base", default=d.base, metavar="SPEC",
                        help="base model: gpt2-scratch (GPT-2 124M, random init), smollm2-135m, a model dir or a hub id "
                        f"(default {d.base})")
    parser.add_argument("--corpus", metavar="PATH", help="corpus dir or zip (default: the downloaded corpus)")
    parser.add_argument("--out", metavar="DIR", required=True, help="run directory (refused if it holds another run)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    parser.add_argument("--lora-r", type=int, default=d.lora_r, metavar="N")
    parser.add_argument("--lora-alpha", type=int, default=d.lora_alpha, metavar="N")
    parser.add_argument("--lora-targets", default=d.lora_targets, metavar="NAMES",
                        help="comma-separated module names or all-linear (default)")
    parser.add_argument("--max-length", type=int, default=d.max_length, metavar="N", help="tokens per example")
    parser.add_argument("--no-genres", dest="genres", action="store_false", help="no genre conditioning")
    parser.add_argument("--persona", action="store_true",
                        help="name the bot's character, the user's character and the film in each prompt")
    parser.add_argument("--persona-dropout", type=float, default=d.persona_dropout, metavar="P",
                        help=f"with --persona: chance each part is left out of a training prompt (default {d.persona_dropout})")
    parser.add_argument("--recall-share", type=float, default=d.recall_share, metavar="F",
                        help="synthetic recall exchanges per real training example, e.g. 0.15 (default 0)")
    parser.add_argument("--length-balance", type=int, default=d.length_balance, metavar="N",
                        help="keep a training reply of w < N words with chance w/N, for longer replies (default 0: off)")
    parser.add_argument("--kl-weight", type=float, default=d.kl_weight, metavar="W",
                        help="LoRA: add W x KL(base || tuned) at reply tokens (default 0: off)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="effective batch (examples/step)")
    parser.add_argument("--micro-batch", type=int, metavar="N", help="pin the micro-batch (default: memory planner)")
    parser.add_argument("--max-memory", default=d.max_memory, metavar="SIZE", help=f"memory budget (default {d.max_memory})")
    parser.add_argument("--lr", type=float, dest="learning_rate", metavar="LR", help="default 5e-5, LoRA 3e-4")
    parser.add_argument("--epochs", type=float, default=d.epochs, metavar="N")
    parser.add_argument("--max-steps", type=int, default=d.max_steps, metavar="N", help="stop after N steps (overrides --epochs)")
    parser.add_argument("--eval-steps", type=int, default=d.eval_steps, metavar="N", help="validate and checkpoint every N steps")
    parser.add_argument("--eval-examples", type=int, default=d.eval_examples, metavar="N", help="validation examples per evaluation (0 = all)")
    parser.add_argument("--logging-steps", type=int, default=d.logging_steps, metavar="N", help="log the loss every N steps")
    parser.add_argument("--patience", type=int, default=d.patience, metavar="N", help="early stopping patience (0 = off; may be changed on --resume)")
    parser.add_argument("--save-total-limit", type=int, default=d.save_total_limit, metavar="N")
    parser.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from trainer.config import CHANGEABLE_ON_RESUME, TrainConfig, TrainError
    from trainer.memory import MemoryBudgetError
    from trainer.train import TrainingInterrupted, train

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if config.corpus is not None and not Path(config.corpus).exists():
        raise UsageError(f"no corpus at {config.corpus}")
    changes = {}
    if config.resume:
        argv = getattr(args, "argv", None)
        _refuse_flags_that_differ_from_the_run(config, argv)
        given = _train_flags_given(argv) if argv is not None else {}
        changes = {name: getattr(config, name) for name in given if name in CHANGEABLE_ON_RESUME}
    try:
        train(config, changes=changes)
    except (TrainError, MemoryBudgetError) as exc:
        raise UsageError(str(exc)) from None
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    return 0


def _refuse_flags_that_differ_from_the_run(config, argv: list[str] | None) -> None:
    """--resume continues with the run's saved settings: a flag the user gave that says otherwise is an
    error naming it, rather than silently ignored. Argparse defaults are not flags the user gave."""
    from trainer.config import TrainError, differing_settings
    from trainer.run_dir import read_metadata

    try:
        saved = (read_metadata(Path(config.out).expanduser()) or {}).get("settings")
    except TrainError as exc:
        raise UsageError(str(exc)) from None
    if saved and argv is not None and (differing := differing_settings(config, saved, _train_flags_given(argv))):
        raise UsageError(f"--resume continues {config.out} with its own settings, and these flags differ from them: "
                         f"{', '.join(differing)}; drop them, or start a new run with another --out")


def _train_flags_given(argv: list[str]) -> dict[str, str]:
    """{dest: option string} of the `train` options present in argv, whatever their value: argv parsed
    again with every default suppressed, so only what was on the command line is set."""
    probe = argparse.ArgumentParser(add_help=False)
    train_parser = add_train_command(probe.add_subparsers())
    actions = [a for a in train_parser._actions if a.option_strings]  # argparse keeps no public list
    for action in actions:
        action.default = argparse.SUPPRESS
    given, _ = probe.parse_known_args(argv)
    return {a.dest: a.option_strings[0] for a in actions if a.dest in vars(given)}


def add_export_command(subparsers) -> None:
    parser = subparsers.add_parser("export", help="copy a run's checkpoint (default: its best) out as a model spec")
    parser.add_argument("--run", metavar="DIR", required=True, help="the training run directory")
    parser.add_argument("--to", metavar="DIR", required=True, help="where the model spec goes")
    parser.add_argument("--checkpoint", metavar="NAME", help="e.g. checkpoint-16 (default: the best)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from trainer.config import TrainError
    from trainer.run_dir import export_checkpoint

    try:
        meta = export_checkpoint(args.run, args.to, args.checkpoint)
    except TrainError as exc:
        raise UsageError(str(exc)) from None
    print(f"exported {meta['exported_from']} (step {meta['metrics']['global_step']}) to {args.to}")
    return 0
