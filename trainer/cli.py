"""moviechat-train: corpus statistics, training, evaluation, export, the cast and rated replies.

Each subcommand is one `add_<name>_command(subparsers)` that registers its
arguments and sets `func` to its `run_<name>`; `main` dispatches. They live in
cli_corpus.py (corpus, cast), cli_train.py (train, export), cli_eval.py (eval,
probes) and ratings.py; cli_common.py holds what they share. Adding a command is
one function pair and one line in `build_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys

from trainer.cli_common import UsageError
from trainer.cli_corpus import add_cast_command, add_corpus_command
from trainer.cli_eval import add_eval_command, add_probes_command
from trainer.cli_train import add_export_command, add_train_command
from trainer.corpus_files import CorpusError
from trainer.ratings import add_ratings_command


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
