"""What the app's pilot tests share: settings, saved data and ways to wait for the app.

Their fixtures (tiny_loaded, slow_loaded, store) are in conftest.py."""

from __future__ import annotations

import asyncio
import functools
import time

from textual.widgets import Static
from textual.widgets._footer import FooterKey

from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.settings import GenerationSettings

FAST = GenerationSettings(temperature=0, max_new_tokens=6, repetition_penalty=1.0, no_repeat_ngram_size=0)
# With these the tiny random model writes space-separated words, which stream as several pieces.
WORDY = GenerationSettings(temperature=0, max_new_tokens=16)
MARKUP = ["[bold red]hi[/]", "[link=https://example.com]click[/link] and [/] and [@click=app.quit]x[/]"]


def app_test(test):
    """Run an async pilot test on a fresh event loop (no pytest async plugin needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


def engine_for(store, loaded, settings=FAST, spec="tiny"):
    return ChatEngine(store, spec, settings, loader=lambda _: loaded)


def saved_conversation(store, title="Old chat", texts=("Where were you?", "At the movies.")):
    conversation = store.create_conversation(title, model_spec="tiny", settings=FAST.to_dict())
    for i, text in enumerate(texts):
        store.add_message(conversation.id, "user" if i % 2 == 0 else "bot", text,
                          model=None if i % 2 == 0 else "tiny", token_count=None if i % 2 == 0 else 4,
                          latency_ms=None if i % 2 == 0 else 500.0, settings={} if i % 2 == 0 else FAST.to_dict())
    return store.get_conversation(conversation.id)


async def settle(pilot, timeout=30.0):
    """Wait for the model load and any reply to finish and their messages to be handled."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while True:
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not app.chat_screen.chat.generating and app.engine.model_status not in ("loading",):
            return
        assert time.monotonic() < deadline, "the app did not settle"
        await asyncio.sleep(0.02)


def footer_actions(app) -> set[str]:
    """The actions whose keys the footer shows now."""
    return {key.action for key in app.screen.query(FooterKey)}


async def wait_until(pilot, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)


async def type_and_send(pilot, text):
    pilot.app.chat_screen.chat_input.text = text
    await pilot.press("enter")
    await settle(pilot)


def texts(app):
    return [(view.role, view.text) for view in app.chat_screen.chat_log.views()]


def plain(widget: Static) -> str:
    return widget.visual.plain
