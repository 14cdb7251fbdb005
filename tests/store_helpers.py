"""What the store's tests share: a database path in folders that don't exist yet, a Store on it,
a conversation of given lines, and a second process writing to a Store (store_writer.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moviechat_tui.core.store import Store

WRITER = Path(__file__).with_name("store_writer.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "nested" / "dir" / "conversations.db"


@pytest.fixture
def store(db_path):
    with Store(db_path) as store:
        yield store


def chat(store, *texts, title="chat"):
    """A conversation whose messages alternate user/bot."""
    conversation = store.create_conversation(title)
    for i, text in enumerate(texts):
        store.add_message(conversation.id, "user" if i % 2 == 0 else "bot", text)
    return conversation


def writer(*args, **popen):
    """store_writer.py run in a second process with `args`; its stdout is a pipe."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(WRITER), *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, **popen)
