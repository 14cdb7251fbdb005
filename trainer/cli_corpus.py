"""`moviechat-train corpus` (the corpus's statistics, optionally its training examples) and
`moviechat-train cast` (the cast file, from the corpus's metadata)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from trainer.cli_common import BUNDLED_TOKENIZER, UsageError, add_corpus_arguments, load_tokenizer, resolve_corpus
from trainer.corpus import Corpus


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
