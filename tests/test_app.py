"""The Textual app, driven through Textual's pilot with a tiny random model: chatting, and snapshots.

Saved conversations, replay, settings, model loading and the palette: test_app_screens.py.
"""

from __future__ import annotations

import time

import pytest
from textual import events
from textual.widgets import Input
from tui_pilot import (
    MARKUP, WORDY, app_test, engine_for, footer_actions, plain, saved_conversation, settle, texts,
    type_and_send, wait_until,
)

from moviechat_tui.core import store as store_module
from moviechat_tui.core.store import Store
from moviechat_tui.tui import replying
from moviechat_tui.tui.app import MovieChatApp
from moviechat_tui.tui.widgets import MessageView


# --- chatting ---------------------------------------------------------------------------------------


@app_test
async def test_a_sent_message_gets_a_streamed_reply_that_is_saved(store, slow_loaded, monkeypatch):
    pieces = []
    original = MessageView.append
    monkeypatch.setattr(MessageView, "append", lambda self, piece: (pieces.append(piece), original(self, piece)))
    # A token every ~50 ms: the tiny model at full speed writes all 16 within the first paced piece.
    app = MovieChatApp(engine_for(store, slow_loaded, WORDY))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.chat_screen.chat_input.has_focus
        await type_and_send(pilot, "Where are you going?")
        [conversation] = store.list_conversations()
        user, bot = store.messages(conversation.id)
        assert (user.text, bot.role, bot.status) == ("Where are you going?", "bot", "complete")
        assert len(pieces) > 1 and "".join(pieces).strip() == bot.text  # shown piece by piece
        assert texts(app) == [("user", user.text), ("bot", bot.text)]
        status = plain(app.screen.query_one("#status-info"))
        assert "tiny" in status and "tok/s" in status and "greedy" in status
        assert "first token" in status and " ms" in status  # a live reply: its wait apart from its speed
        assert "Where are you going?" in plain(app.screen.query_one("#status-title"))
        assert app.chat_screen.chat_input.has_focus and app.chat_screen.chat_input.text == ""


@app_test
async def test_escape_stops_a_reply_and_keeps_what_was_shown(store, slow_loaded):
    app = MovieChatApp(engine_for(store, slow_loaded, WORDY.replace(max_new_tokens=200)))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.chat_screen.chat_input.text = "Tell me a long story."
        await pilot.press("enter")
        bot_view = app.chat_screen.chat_log.views()[-1]
        await wait_until(pilot, lambda: bot_view.text.strip())
        assert app.screen.query_one("#stop").display  # a visible Stop while replying
        await pilot.press("escape")
        await settle(pilot)
        bot = store.messages(store.list_conversations()[0].id)[-1]
        assert bot.status == "cancelled" and 0 < bot.token_count < 150
        assert bot_view.text == bot.text and bot_view.status == "cancelled"
        assert "cancelled" in plain(bot_view.query_one(".meta"))
        assert not app.screen.query_one("#stop").display


@app_test
async def test_the_footer_offers_stop_only_once_a_reply_runs_past_the_footer_delay(store, slow_loaded,
                                                                                   monkeypatch):
    # Recomposing the footer while the model reads the history slowed the first token; a reply
    # that ends within FOOTER_DELAY leaves the footer as it was, a longer one shows esc Stop.
    monkeypatch.setattr(replying, "FOOTER_DELAY", 60.0)
    app = MovieChatApp(engine_for(store, slow_loaded, WORDY.replace(max_new_tokens=6)))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await type_and_send(pilot, "Hello.")  # the conversation is saved: ctrl+r now retries
        before = footer_actions(app)
        recomposed = []
        original = app.chat_screen.refresh_bindings
        app.chat_screen.refresh_bindings = lambda: (recomposed.append(1), original())
        await type_and_send(pilot, "And again.")
        assert recomposed == [] and footer_actions(app) == before and "stop" not in before
        monkeypatch.setattr(replying, "FOOTER_DELAY", 0.2)
        app.chat_screen.chat.settings = WORDY.replace(max_new_tokens=200)
        app.chat_screen.chat_input.text = "Tell me a long story."
        await pilot.press("enter")
        await wait_until(pilot, lambda: "stop" in footer_actions(app))
        assert app.chat_screen.chat.generating
        await pilot.press("escape")
        await settle(pilot)
        await wait_until(pilot, lambda: footer_actions(app) == before)  # recomposed after a refresh


@app_test
async def test_empty_messages_are_ignored_and_long_pastes_kept(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.chat_screen.chat_input.text = "   \n  "
        await pilot.press("enter")
        await settle(pilot)
        assert store.list_conversations() == [] and texts(app) == []
        pasted = "\n".join(f"line {i}: " + "words " * 20 for i in range(50))  # ~6 KB, many lines
        app.post_message(events.Paste(pasted))  # as the terminal driver does
        await pilot.pause()
        assert app.chat_screen.chat_input.text == pasted
        await pilot.press("enter")
        await settle(pilot)
        [conversation] = store.list_conversations()
        assert store.messages(conversation.id)[0].text == pasted.strip()


@app_test
async def test_markup_in_messages_and_titles_is_shown_as_typed(store, tiny_loaded):
    conversation = saved_conversation(store, title="[b]bold?[/b]", texts=MARKUP)
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=conversation.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        bodies = [plain(view.query_one(".body")) for view in app.chat_screen.chat_log.views()]
        assert bodies == MARKUP
        assert plain(app.screen.query_one("#status-title")).endswith("[b]bold?[/b]")
        await type_and_send(pilot, "[red]typed[/red] [link=x]y[/link]")
        assert plain(app.chat_screen.chat_log.views()[2].query_one(".body")) == "[red]typed[/red] [link=x]y[/link]"
        assert store.messages(conversation.id)[2].text == "[red]typed[/red] [link=x]y[/link]"
        await pilot.press("ctrl+b")
        label = app.chat_screen.conversation_list.get_option_at_index(0).prompt
        assert "[b]bold?[/b]" in label.plain


@app_test
async def test_edit_and_resend_the_last_message_and_regenerate_the_reply(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await type_and_send(pilot, "Hello there.")
        await type_and_send(pilot, "Who are you?")
        await pilot.press("up")  # in the empty box: edit the last message
        assert app.chat_screen.chat.editing and app.chat_screen.chat_input.text == "Who are you?"
        app.chat_screen.chat_input.text = "Where are you?"
        await pilot.press("enter")
        await settle(pilot)
        conversation_id = store.list_conversations()[0].id
        messages = store.messages(conversation_id)
        assert [m.text for m in messages][::2] == ["Hello there.", "Where are you?"]
        assert len(messages) == 4 and messages[3].status == "complete"
        assert texts(app) == [(m.role, m.text) for m in messages]
        old_reply_id = messages[3].id
        await pilot.press("ctrl+r")
        await settle(pilot)
        messages = store.messages(conversation_id)
        assert len(messages) == 4 and messages[3].id != old_reply_id and messages[2].text == "Where are you?"
        assert texts(app) == [(m.role, m.text) for m in messages]


@app_test
async def test_an_edit_can_be_cancelled_with_escape(store, tiny_loaded):
    conversation = saved_conversation(store)
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=conversation.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("up")
        assert app.chat_screen.chat.editing and app.chat_screen.chat_input.text == "Where were you?"
        await pilot.press("escape")
        assert not app.chat_screen.chat.editing and app.chat_screen.chat_input.text == ""
        assert [m.text for m in store.messages(conversation.id)] == ["Where were you?", "At the movies."]


@app_test
async def test_a_locked_database_never_freezes_the_app_and_keeps_the_turn(tmp_path, tiny_loaded, monkeypatch):
    import sqlite3

    from moviechat_tui.tui import app as app_module, busy

    for module in (busy, app_module):
        monkeypatch.setattr(module, "BUSY_SECONDS", 0.2)
    store = Store(tmp_path / "locked.db")
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    app = MovieChatApp(engine_for(store, tiny_loaded))

    def busy_shown():
        return any(n.message == busy.BUSY_NOTICE for n in app._notifications)

    async with app.run_test(size=(100, 30)) as pilot:  # narrow: the sidebar starts closed
        await settle(pilot)
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        app.chat_screen.chat_input.text = "Anyone home?"
        await pilot.press("enter")
        await wait_until(pilot, busy_shown)
        # The app answers meanwhile: the turn is on screen, the sidebar opens and lists (reads don't wait).
        assert app.chat_screen.chat.generating and texts(app)[0] == ("user", "Anyone home?")
        await pilot.press("ctrl+b")
        assert app.chat_screen.conversation_list.has_focus and store.list_conversations() == []
        await pilot.press("ctrl+b")
        other.execute("ROLLBACK")
        await settle(pilot)
        [conversation] = store.list_conversations()
        assert [(m.role, m.status) for m in store.messages(conversation.id)] == [("user", "complete"),
                                                                                ("bot", "complete")]
        assert texts(app) == [(m.role, m.text) for m in store.messages(conversation.id)]

        # A rename waits on a worker too: the dialog closes, the title is saved once the lock goes.
        app.clear_notifications()
        other.execute("BEGIN IMMEDIATE")
        app.chat_screen.action_rename_current()
        await pilot.pause()
        app.screen.query_one(Input).value = "Knock knock"
        await pilot.press("enter")
        await wait_until(pilot, busy_shown)
        assert app.screen is app.chat_screen and store.get_conversation(conversation.id).title == "Anyone home?"
        other.execute("ROLLBACK")
        await wait_until(pilot, lambda: store.get_conversation(conversation.id).title == "Knock knock")

        # Esc while the message waits to be saved: nothing saved, the text goes back in the box.
        app.clear_notifications()
        other.execute("BEGIN IMMEDIATE")
        app.chat_screen.chat_input.text = "Hello?"
        await pilot.press("enter")
        await wait_until(pilot, busy_shown)
        await pilot.press("escape")
        await settle(pilot)
        other.execute("ROLLBACK")
        assert app.chat_screen.chat_input.text == "Hello?" and len(store.messages(conversation.id)) == 2
    other.close()
    store.close()


# --- snapshots: fixed data, fixed clock, no generation ------------------------------------------------------

SNAPSHOT_CHAT = [
    "Where have you been all night?",
    "Out. Walking. Thinking about what you said at the station.",
    "And? Did you decide anything?",
    "I decided the train can leave without me. [Some things are worth missing a train for.]",
]


@pytest.fixture
def snapshot_app(tmp_path, tiny_loaded, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(store_module, "utc_now", lambda: "2025-03-14T21:07:00.000Z")
    store = Store(tmp_path / "snap.db")
    saved_conversation(store, "Rain on the platform", ("Got a light?", "Never smoked. Never needed to."))
    current = saved_conversation(store, "Where have you been all night?", SNAPSHOT_CHAT)
    engine = engine_for(store, tiny_loaded)
    engine.load()  # already loaded: the status line shows no loading state
    yield MovieChatApp(engine, conversation_id=current.id)
    store.close()
    time.tzset()


async def _steady(pilot):
    """No blinking cursors: the screenshot must not depend on when it is taken."""
    await pilot.pause()
    for field in pilot.app.screen.query("Input, TextArea"):
        field.cursor_blink = False
    await pilot.pause()


def test_snapshot_chat_screen(snap_compare, snapshot_app):
    assert snap_compare(snapshot_app, terminal_size=(80, 24), run_before=_steady)


def test_snapshot_sidebar(snap_compare, snapshot_app):
    async def focus_the_list(pilot):
        await pilot.pause()  # the chat screen mounts after the app is ready
        pilot.app.chat_screen.conversation_list.focus()  # wide terminal: the sidebar is open from the start
        await _steady(pilot)

    assert snap_compare(snapshot_app, terminal_size=(110, 30), run_before=focus_the_list)


def test_snapshot_settings(snap_compare, snapshot_app):
    async def open_settings(pilot):
        await pilot.press("ctrl+s")
        await _steady(pilot)

    assert snap_compare(snapshot_app, terminal_size=(80, 24), run_before=open_settings)
