"""moviechat-train: corpus statistics, training, evaluation, export, the cast and rated replies.

Each subcommand is one `add_<name>_command(subparsers)` that registers its
arguments and sets `func`; `main` dispatches. Adding a command is one function
pair and one line in `build_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from trainer.clean import CleanConfig
from trainer.corpus import Corpus, load_corpus
from trainer.corpus_files import CorpusError
from trainer.ratings import add_ratings_command

BUNDLED_TOKENIZER = "gpt2"


class UsageError(Exception):
    """A bad argument value found after parsing (one line, printed as `error: ...`)."""


# --- helpers shared by subcommands -------------------------------------------


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", metavar="PATH", type=Path,
        help="the Cornell corpus: a directory or cornell_movie_dialogs_corpus.zip (original or ConvoKit layout); "
        "default: the copy downloaded into the user cache (fetched on first use)",
    )
    parser.add_argument("--lowercase", action="store_true", help="lower-case all text (off by default)")


def resolve_corpus(args: argparse.Namespace) -> Corpus:
    """The corpus named by --corpus, else the cached official one (downloading it if needed)."""
    path = args.corpus
    if path is None:
        from trainer.download import ensure_corpus

        path = ensure_corpus(progress=sys.stderr.isatty())
    return load_corpus(path, CleanConfig(lowercase=getattr(args, "lowercase", False)))


def load_tokenizer(spec: str):
    """`gpt2` = the GPT-2 vocabulary bundled with the package; anything else = a local tokenizer dir or hub id."""
    if spec == BUNDLED_TOKENIZER:
        from moviechat_tui.core.paths import gpt2_tokenizer

        return gpt2_tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load tokenizer {spec!r}: {first_line}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --- corpus ------------------------------------------------------------------


def add_corpus_command(subparsers) -> None:
    parser = subparsers.add_parser("corpus", help="load the corpus and print its statistics")
    add_corpus_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--tokenizer", metavar="SPEC", default=BUNDLED_TOKENIZER,
                        help="tokenizer for token counts: 'gpt2' (bundled, default) or a tokenizer dir")
    parser.add_argument("--examples", action="store_true",
                        help="also build (or load from cache) the training examples and report padding")
    parser.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per example (with --examples)")
    parser.add_argument("--genres", action="store_true", help="condition examples on genres (with --examples)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="batch size for the padding report")
    parser.set_defaults(func=run_corpus)


def run_corpus(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    corpus = resolve_corpus(args)
    load_s = time.perf_counter() - started
    tokenizer = load_tokenizer(args.tokenizer)
    stats = corpus.stats(tokenizer)
    stats["load_seconds"] = round(load_s, 2)
    if args.examples:
        if args.max_length < 8 or args.batch_size < 1:
            raise UsageError("--max-length must be at least 8 and --batch-size at least 1")
        stats["examples"] = _example_stats(corpus, tokenizer, args)
        stats["examples_batch_size"] = args.batch_size
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        _print_stats(stats)
    return 0


def _example_stats(corpus: Corpus, tokenizer, args) -> dict:
    from trainer.dataset import build_examples
    from trainer.splits import SPLITS

    report = {}
    for split in SPLITS:
        examples = build_examples(corpus, tokenizer, split, max_length=args.max_length, genres=args.genres)
        padding = examples.padding_report(args.batch_size) if len(examples) else {"bucketed": 0.0, "random": 0.0}
        report[split] = {
            "examples": len(examples),
            "tokens": examples.n_tokens,
            "reply_tokens": examples.n_reply_tokens,
            "truncated_context": examples.truncated,
            "skipped": dict(examples.skipped),
            "padding_bucketed": round(padding["bucketed"], 4),
            "padding_random": round(padding["random"], 4),
        }
    return report


def _print_stats(stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    unit = stats["turn_length_unit"]

    console.print(f"[bold]Corpus[/bold] {stats['source']} ({stats['layout']} layout, loaded in {stats['load_seconds']:.1f} s)")
    totals = Table(title="Totals")
    totals.add_column("item")
    totals.add_column("count", justify="right")
    for key in ("movies", "characters", "conversations", "utterances", "exchanges", "empty_utterances"):
        totals.add_row(key.replace("_", " "), f"{stats[key]:,}")
    console.print(totals)

    splits = Table(title="Splits (by movie)")
    columns = ("movies", "conversations", "utterances", "exchanges", unit)
    splits.add_column("split")
    for column in columns:
        splits.add_column(column, justify="right")
    for name, row in stats["splits"].items():
        splits.add_row(name, *(f"{row[c]:,}" for c in columns))
    console.print(splits)

    if "examples" in stats:
        examples = Table(title=f"Training examples (one per reply), padding at batch size {stats['examples_batch_size']}")
        columns = {"examples": "examples", "tokens": "tokens", "reply_tokens": "reply tokens",
                   "truncated_context": "context cut", "padding_bucketed": "pad bucketed", "padding_random": "pad random"}
        examples.add_column("split", no_wrap=True)
        for header in columns.values():
            examples.add_column(header, justify="right")
        for name, row in stats["examples"].items():
            cells = [f"{row[c]:.1%}" if c.startswith("padding") else f"{row[c]:,}" for c in columns]
            examples.add_row(name, *cells)
        console.print(examples)

    issues = Table(title="Left out (skipped) and fixed (repaired), by reason")
    issues.add_column("kind")
    issues.add_column("reason")
    issues.add_column("count", justify="right")
    for kind in ("skipped", "repaired"):
        for reason, count in stats[kind].items():
            issues.add_row(kind, reason.replace("_", " "), f"{count:,}")
    for name, row in stats.get("examples", {}).items():
        for reason, count in row["skipped"].items():
            issues.add_row(f"{name} reply", reason.replace("_", " "), f"{count:,}")
    if not issues.row_count:
        issues.add_row("-", "nothing", "0")
    console.print(issues)

    genres = Table(title="Top genres")
    genres.add_column("genre")
    genres.add_column("movies", justify="right")
    for genre, count in stats["top_genres"].items():
        genres.add_row(genre, str(count))

    lengths = Table(title=f"Turn length ({unit})")
    lengths.add_column(unit)
    lengths.add_column("turns", justify="right")
    lengths.add_column("share", justify="right")
    total = max(1, stats["utterances"])
    for bucket, count in stats["turn_lengths"].items():
        lengths.add_row(bucket, f"{count:,}", f"{count / total:.1%}")
    p = stats["turn_length_percentiles"]
    if p:
        lengths.caption = f"median {p['p50']}, p90 {p['p90']}, p99 {p['p99']}, max {p['max']}"

    turns = Table(title="Turns per conversation")
    turns.add_column("turns")
    turns.add_column("conversations", justify="right")
    for bucket, count in stats["turns_per_conversation"].items():
        turns.add_row(bucket, f"{count:,}")

    from rich.columns import Columns

    console.print(Columns([genres, lengths, turns]))


# --- train -------------------------------------------------------------------


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
    parser.add_argument("--patience", type=int, default=d.patience, metavar="N", help="early stopping patience (0 = off)")
    parser.add_argument("--save-total-limit", type=int, default=d.save_total_limit, metavar="N")
    parser.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from trainer.config import TrainConfig
    from trainer.memory import MemoryBudgetError
    from trainer.config import TrainError
    from trainer.train import TrainingInterrupted, train

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if config.corpus is not None and not Path(config.corpus).exists():
        raise UsageError(f"no corpus at {config.corpus}")
    if config.resume:
        _refuse_flags_that_differ_from_the_run(config, getattr(args, "argv", None))
    try:
        train(config)
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


# --- eval --------------------------------------------------------------------


def add_eval_command(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="reply perplexity, sampled-reply metrics and the genre test of a model")
    parser.add_argument("--model", metavar="SPEC", default="default",
                        help="a trainer run dir, default, smollm2-135m, a model dir or a hub id (default: default)")
    add_corpus_arguments(parser)
    parser.add_argument("--split", default="validation", choices=("train", "validation", "test", "all"))
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--samples", type=int, default=200, metavar="N",
                        help="held-out contexts to sample replies for (default 200; 0 skips sampling)")
    parser.add_argument("--seed", type=int, default=0, help="picks the samples and seeds decoding, baseline, genre shuffle")
    parser.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per perplexity example")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="examples per perplexity batch")
    parser.add_argument("--genres", action=argparse.BooleanOptionalAction, default=None,
                        help="condition on the true genres (default: as the run was trained; off for other models)")
    parser.add_argument("--genre-test", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure perplexity with true vs shuffled genres (default on)")
    parser.add_argument("--persona", action=argparse.BooleanOptionalAction, default=None,
                        help="name the characters and the film in prompts (default: as the run was trained; off for other models)")
    parser.add_argument("--persona-test", action=argparse.BooleanOptionalAction, default=True,
                        help="with persona: also measure perplexity with true vs shuffled personas (default on)")
    parser.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True,
                        help="run the context probes: recall of stated facts, forced choice, own name (default on)")
    parser.add_argument("--probe-seeds", type=int, default=3, metavar="N", help="sampled replies per probe (default 3)")
    parser.add_argument("--backend", choices=("auto", "transformers", "ctranslate2"), default="auto",
                        help="how replies are sampled (default: as the chat app does)")
    parser.add_argument("--out", type=Path, metavar="FILE.md",
                        help="markdown report (default: eval-SPLIT.md in a run dir, else ./eval-MODEL-SPLIT.md)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from moviechat_tui.core.loading import ModelLoadError
    from trainer.eval_report import default_report_path, markdown_report, print_report
    from trainer.evaluate import EvalConfig, EvalError, evaluate

    config = EvalConfig(samples=args.samples, seed=args.seed, max_length=args.max_length, batch_size=args.batch_size,
                        genres=args.genres, genre_test=args.genre_test, persona=args.persona,
                        persona_test=args.persona_test, probes=args.probes, probe_seeds=args.probe_seeds)
    try:
        model = args.model
        if args.backend != "auto":
            from moviechat_tui.core.loading import load_model

            model = load_model(args.model, backend=args.backend)
        result = evaluate(model, resolve_corpus(args), args.split, config, progress=args.progress and sys.stderr.isatty())
    except (EvalError, ModelLoadError) as exc:
        raise UsageError(str(exc)) from None
    out = args.out or default_report_path(args.model, result)
    try:
        out.write_text(markdown_report(result))
        result["report"] = str(out)
    except OSError as exc:
        print(f"warning: could not write the report {out}: {exc.strerror}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
        if "report" in result:
            print(f"report: {out}")
    return 0


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


# --- probes ------------------------------------------------------------------


def add_probes_command(subparsers) -> None:
    parser = subparsers.add_parser("probes", help="the context probes alone: recall of stated facts, forced choice, own name")
    parser.add_argument("--model", metavar="SPEC", default="default", help="any model spec (default: default)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N", help="sampled replies per probe (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="picks the probes' personas, fillers and values")
    parser.add_argument("--backend", choices=("auto", "transformers", "ctranslate2"), default="auto")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every probe, reply and score as JSON")
    parser.set_defaults(func=run_probes_command)


def run_probes_command(args: argparse.Namespace) -> int:
    from moviechat_tui.core.loading import ModelLoadError, load_model
    from trainer.probes import run_probes

    if args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    try:
        loaded = load_model(args.model, backend=args.backend)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None
    report = run_probes(loaded, args.seeds, args.seed)
    print(f"{args.model} ({loaded.backend}): {report['probes']} probes x {report['seeds']} replies")
    print(f"  names the fact:        {report['recall']:.1%}  (by distance: "
          + ", ".join(f"{d}: {v:.0%}" for d, v in report["by_distance"].items()) + ")")
    print(f"  names its own persona: {report['own_name']:.1%}")
    print(f"  forced choice:         {report['forced_choice']:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "backend": loaded.backend, **report}, indent=1))
    return 0


# --- cast --------------------------------------------------------------------


def add_cast_command(subparsers) -> None:
    from moviechat_tui.core.cast import CAST_FILE

    parser = subparsers.add_parser("cast", help="build the cast file (films and characters) from the corpus metadata")
    parser.add_argument("--corpus", metavar="PATH", required=True, help="corpus dir or zip with the metadata files")
    parser.add_argument("--out", type=Path, default=CAST_FILE, metavar="FILE",
                        help="where to write it (default: the file shipped in the package)")
    parser.set_defaults(func=run_cast)


def run_cast(args: argparse.Namespace) -> int:
    from trainer.cast import build_cast, write_cast

    cast = build_cast(args.corpus)
    path = write_cast(cast, args.out)
    characters = sum(len(m["characters"]) for m in cast["movies"])
    print(f"wrote {path}: {len(cast['movies']):,} films, {characters:,} characters")
    return 0


# --- entry point -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moviechat-train", description="Prepare, train and evaluate moviechat models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_corpus_command(subparsers)
    add_eval_command(subparsers)
    add_train_command(subparsers)
    add_export_command(subparsers)
    add_cast_command(subparsers)
    add_probes_command(subparsers)
    add_ratings_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # which flags were given (train --resume)
    try:
        return args.func(args)
    except (CorpusError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
