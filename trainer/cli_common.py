"""What moviechat-train's subcommands share: the --corpus arguments, the tokenizer, UsageError."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.clean import CleanConfig
from trainer.corpus import Corpus, load_corpus

BUNDLED_TOKENIZER = "gpt2"


class UsageError(Exception):
    """A bad argument value found after parsing (one line, printed as `error: ...`)."""


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
