"""The writer processes of bench/soak.py (the pipe chat is the real `moviechat-tui chat`).

    python bench/soak_writers.py web DB MODEL JOURNAL [--sessions 4]   # web sessions on one engine
    python bench/soak_writers.py tui DB MODEL JOURNAL [--conversation ID]  # the Textual app, pilot-driven

Each writes a JSON line to JOURNAL for every turn the user was shown as done, and only after it was
(a user message once `send` returned, a reply once it was complete): what was acknowledged, to be
looked for in the database after any number of kill -9s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LINES = ["Where are you going?", "I never said that.", "What time is it?", "You can't handle the truth.",
         "Are you talking to me?", "Tell me about the money.", "Who sent you here?", "Nobody's perfect."]
SETTINGS = dict(temperature=0.8, max_new_tokens=12)
WEB_BUSY_TIMEOUT = 10.0  # as web/resources.DB_BUSY_TIMEOUT (not imported: it would load Streamlit)
TURNS_PER_CONVERSATION = 6  # then a web session starts a new conversation, as users do


class Journal:
    """Append-only JSON lines, one writer lock per process; each line is flushed when written."""

    def __init__(self, path: str) -> None:
        self.file, self.lock = open(path, "a", encoding="utf-8"), threading.Lock()

    def write(self, **entry) -> None:
        with self.lock:
            self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.file.flush()


def user_line(writer: str, counter) -> str:
    """A user message no other turn repeats: the soak finds each one by its text."""
    return f"[{writer} {os.getpid()}-{next(counter)}] {random.choice(LINES)}"


def think() -> None:
    time.sleep(random.uniform(0.1, 0.5))


def web(db: str, model: str, journal: Journal, sessions: int) -> None:
    """Sessions of the web page: like web/app.py's reply_to, on one engine shared by the process."""
    from moviechat_tui.core.engine import ChatEngine
    from moviechat_tui.core.generation import GenerationSettings
    from moviechat_tui.core.store import Store, StoreError

    engine = ChatEngine(Store(db, busy_timeout=WEB_BUSY_TIMEOUT), model, GenerationSettings(**SETTINGS))
    engine.load()
    counter = itertools.count()

    def session(name: str) -> None:
        conversation = None
        while True:
            try:
                if conversation is None or conversation.message_count >= 2 * TURNS_PER_CONVERSATION:
                    conversation = engine.new_conversation()
                reply = engine.send(conversation.id, user_line(name, counter))
                journal.write(kind="user", writer=name, conversation=conversation.id, text=reply.user_message.text)
                reply.consume()
                if reply.status == "complete":
                    journal.write(kind="bot", writer=name, conversation=conversation.id,
                                  user=reply.user_message.text, text=reply.message.text)
                conversation = engine.get_conversation(conversation.id)
            except StoreError as exc:  # counted by the soak: the database said no in time
                journal.write(kind="store_error", writer=name, error=str(exc))
            think()

    threads = [threading.Thread(target=session, args=(f"web{i}",), daemon=True) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def tui(db: str, model: str, journal: Journal, conversation_id: int | None) -> None:
    """The terminal app, typed into through Textual's pilot: a turn counts once its reply is shown done."""
    from moviechat_tui.core.engine import ChatEngine
    from moviechat_tui.core.generation import GenerationSettings
    from moviechat_tui.core.store import Store
    from moviechat_tui.tui.app import MovieChatApp
    from moviechat_tui.tui.widgets import MessageView

    engine = ChatEngine(Store(db), model, GenerationSettings(**SETTINGS))
    app = MovieChatApp(engine, conversation_id=conversation_id)
    counter = itertools.count()

    async def drive() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            while True:
                await pilot.pause(0.05)
                chat = app.chat_screen.chat  # the Chat widget: message box, reply state, open conversation
                if chat.generating or not engine.model_loaded:
                    continue
                text = user_line("tui", counter)
                before = len(app.query(MessageView))
                chat.chat_input.text = text
                await pilot.press("enter")
                deadline = time.monotonic() + 60
                while (len(app.query(MessageView)) < before + 2 or chat.generating) and time.monotonic() < deadline:
                    await pilot.pause(0.02)
                await pilot.pause(0.05)  # let the finished reply render
                user, bot = list(app.query(MessageView))[-2:]
                if chat.conversation is not None and user.text == text:
                    journal.write(kind="user", writer="tui", conversation=chat.conversation.id, text=text)
                    if bot.status == "complete":
                        journal.write(kind="bot", writer="tui", conversation=chat.conversation.id, user=text,
                                      text=bot.text)
                think()

    asyncio.run(drive())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["web", "tui"])
    parser.add_argument("db")
    parser.add_argument("model")
    parser.add_argument("journal")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--conversation", type=int)
    args = parser.parse_args()
    journal = Journal(args.journal)
    if args.role == "web":
        web(args.db, args.model, journal, args.sessions)
    else:
        tui(args.db, args.model, journal, args.conversation)


if __name__ == "__main__":
    main()
