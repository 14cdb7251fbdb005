"""A second process writing to a conversation Store, driven by tests/test_store_concurrency.py.

    python tests/store_writer.py stream DB   # streams a bot reply token by token until killed
    python tests/store_writer.py bulk DB N   # adds N messages to its own conversation after "go" on stdin

`open_and_write` is the target of processes started by multiprocessing (several on one new file).
"""

from __future__ import annotations

import sys
import time

from moviechat_tui.core.store import Store


def stream(db: str) -> None:
    store = Store(db)
    conversation = store.create_conversation("streaming")
    store.add_message(conversation.id, "user", "tell me a story")
    reply = store.add_message(conversation.id, "bot", "", status="partial")
    text, deadline = "", time.monotonic() + 60  # the test kills us long before this
    for count in range(1, 100_000):
        text += f" word{count}"
        store.update_message(reply.id, text=text, token_count=count)
        if count == 5:
            print(conversation.id, reply.id, flush=True)
        if time.monotonic() > deadline:
            break


def bulk(db: str, n: int) -> None:
    store = Store(db)
    conversation = store.create_conversation("bulk")
    print(conversation.id, flush=True)
    sys.stdin.readline()  # "go": both writers start together
    for i in range(n):
        store.add_message(conversation.id, "user" if i % 2 == 0 else "bot", f"message {i}")
    print("done", flush=True)


def open_and_write(db: str, name: str, n: int, start) -> None:
    """Wait for `start` (a Barrier: all processes open the file together), then write n messages."""
    start.wait()
    with Store(db) as store:
        conversation = store.create_conversation(name)
        for i in range(n):
            store.add_message(conversation.id, "user" if i % 2 == 0 else "bot", f"message {i}")


if __name__ == "__main__":
    if sys.argv[1] == "stream":
        stream(sys.argv[2])
    else:
        bulk(sys.argv[2], int(sys.argv[3]))
