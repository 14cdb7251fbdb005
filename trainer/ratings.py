"""`moviechat-train ratings`: the replies users rated in the app, as preference data (JSON lines).

One line per rated reply (docs/training.md describes the fields). Replies that share
`conversation_id` and `parent_id` answer the same context, so an "up" and a "down" among them make a
chosen/rejected pair for preference tuning; a lone rating is a label for the reply in its context.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from trainer.cli_common import UsageError


class RatingsError(Exception):
    """One line for the user."""


def rated_exchanges(store) -> Iterator[dict]:
    """Each rated reply with the branch that led to it and the conversation's persona."""
    conversations = {}
    for reply in store.rated_messages():
        if reply.conversation_id not in conversations:
            conversations[reply.conversation_id] = store.get_conversation(reply.conversation_id)
        conversation = conversations[reply.conversation_id]
        context = store.branch_to(reply.id)[:-1]
        yield {
            "conversation_id": reply.conversation_id,
            "message_id": reply.id,
            "parent_id": reply.parent_id,
            "persona": conversation.conditioning,
            "context": [{"role": m.role, "text": m.text} for m in context],
            "reply": reply.text,
            "rating": reply.rating,
            "out_of_character": reply.out_of_character,
            "status": reply.status,
            "model": reply.model,
            "settings": reply.settings,
            "created_at": reply.created_at,
            "rated_at": reply.rated_at,
        }


def write_ratings(db_path: Path, out: str) -> tuple[int, int]:
    """Write the rated exchanges of `db_path` to `out` ("-": stdout); returns (replies, conversations)."""
    from moviechat_tui.core.store import Store, StoreError

    if not db_path.is_file():
        raise RatingsError(f"no conversation database at {db_path} (give --db PATH)")
    try:
        with Store(db_path) as store:
            records = list(rated_exchanges(store))
    except StoreError as exc:
        raise RatingsError(str(exc)) from None
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if out == "-":
        sys.stdout.write(lines)
    else:
        _write_atomically(Path(out), lines)
    return len(records), len({r["conversation_id"] for r in records})


def _write_atomically(path: Path, text: str) -> None:
    """The whole file or the old one: a half-written dataset would train on half the ratings."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError as exc:
        raise RatingsError(f"cannot write {path}: {exc.strerror or exc}") from None


def add_ratings_command(subparsers) -> None:
    parser = subparsers.add_parser("ratings", help="export the replies rated in the app as preference data (JSONL)")
    parser.add_argument("--out", metavar="FILE.jsonl", required=True, help="where to write ('-': stdout)")
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="conversation database (default: $MOVIECHAT_DB or the user data dir)")
    parser.set_defaults(func=run_ratings)


def run_ratings(args: argparse.Namespace) -> int:
    from moviechat_tui.core.paths import default_db_path

    db_path = Path(args.db or default_db_path()).expanduser()
    try:
        replies, conversations = write_ratings(db_path, args.out)
    except RatingsError as exc:
        raise UsageError(str(exc)) from None
    if args.out != "-":
        note = "" if replies else " (none rated yet: rate replies in the app or on the web page)"
        print(f"wrote {replies} rated replies from {conversations} conversations to {args.out}{note}",
              file=sys.stderr)
    return 0
