"""The Textual app, driven through Textual's pilot with a tiny random model."""

from __future__ import annotations

import asyncio
import functools
import os
import time

import pytest
from textual import events
from textual.widgets import Input, Static

from moviechat_tui.core import store as store_module
from moviechat_tui.tui.app import MovieChatApp
from moviechat_tui.tui.chat_screen import COMMANDS
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.settings import GenerationSettings, SettingsError
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.store import Store
from moviechat_tui.tui.replay import ReplayScreen
from moviechat_tui.tui.screens import ConfirmScreen, HelpScreen, PromptScreen, SettingsScreen
from moviechat_tui.tui.widgets import ConversationList, MessageView

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


@pytest.fixture(scope="module")
def tiny_loaded(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


@pytest.fixture(scope="module")
def slow_loaded(tiny_gpt2_dir):
    """The tiny model at ~20 tokens/s: slow enough to press esc mid-reply."""
    saved = os.environ.get("MOVIECHAT_BACKEND")
    os.environ["MOVIECHAT_BACKEND"] = "transformers"  # the plain path, whose forward can be slowed
    try:
        loaded = load_model(str(tiny_gpt2_dir))
    finally:
        os.environ.pop("MOVIECHAT_BACKEND") if saved is None else os.environ.update(MOVIECHAT_BACKEND=saved)
    forward = loaded.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    loaded.model.forward = slow_forward
    return loaded


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "chat.db") as store:
        yield store


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


# --- chatting ---------------------------------------------------------------------------------------


@app_test
async def test_a_sent_message_gets_a_streamed_reply_that_is_saved(store, tiny_loaded, monkeypatch):
    pieces = []
    original = MessageView.append
    monkeypatch.setattr(MessageView, "append", lambda self, piece: (pieces.append(piece), original(self, piece)))
    app = MovieChatApp(engine_for(store, tiny_loaded, WORDY))
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
async def test_a_locked_database_is_reported_not_crashed_on(tmp_path, tiny_loaded):
    import sqlite3

    store = Store(tmp_path / "locked.db", busy_timeout=0.2)
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        await type_and_send(pilot, "Anyone home?")  # fails creating the conversation
        assert any("locked by another program" in n.message for n in app._notifications)
        assert app.chat_screen.chat_input.text == "Anyone home?"  # nothing lost: send it again later
        other.execute("ROLLBACK")
        await pilot.press("enter")
        await settle(pilot)
        [conversation] = store.list_conversations()
        assert [m.role for m in store.messages(conversation.id)] == ["user", "bot"]

        app.clear_notifications()
        other.execute("BEGIN IMMEDIATE")
        await type_and_send(pilot, "Hello?")  # fails saving the message, in the reply's worker
        assert any("locked by another program" in n.message for n in app._notifications)
        assert app.chat_screen.chat_input.text == "Hello?"
        assert texts(app) == [(m.role, m.text) for m in store.messages(conversation.id)]  # as stored
        other.execute("ROLLBACK")
        await pilot.press("enter")
        await settle(pilot)
        assert [m.text for m in store.messages(conversation.id)][2] == "Hello?"
    other.close()
    store.close()


# --- saved conversations --------------------------------------------------------------------------------


@app_test
async def test_open_a_saved_conversation_from_the_sidebar_and_continue_it(store, tiny_loaded):
    old = saved_conversation(store)
    saved_conversation(store, title="Newer chat", texts=("Hi.", "Hello."))
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert texts(app) == []  # starts on a new, unsaved conversation
        await pilot.press("ctrl+b")
        listing = app.chat_screen.conversation_list
        assert listing.has_focus and listing.option_count == 2
        assert listing.get_option_at_index(0).prompt.plain.split("\n")[0].strip() == "Newer chat"  # newest first
        await pilot.press("down", "enter")
        assert texts(app) == [("user", "Where were you?"), ("bot", "At the movies.")]
        assert app.chat_screen.chat_input.has_focus
        await type_and_send(pilot, "What did you see?")
        assert [m.text for m in store.messages(old.id)][:3] == ["Where were you?", "At the movies.",
                                                                "What did you see?"]
        assert len(store.messages(old.id)) == 4 and len(store.list_conversations()) == 2
        await pilot.press("ctrl+f")
        await pilot.press(*"movies")
        assert listing.option_count == 1 and listing.selected_id == old.id
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+f", "ctrl+u")  # (clear the search)
        await pilot.click(ConversationList, offset=(4, 2))  # the mouse works too: the second one,
        assert app.chat_screen.conversation.title == "Newer chat"  # now that the continued one is the newest
        assert texts(app) == [("user", "Hi."), ("bot", "Hello.")]


@app_test
async def test_start_on_a_conversation_and_ctrl_n_starts_a_new_one(store, tiny_loaded):
    old = saved_conversation(store)
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=old.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert texts(app) == [("user", "Where were you?"), ("bot", "At the movies.")]
        await pilot.press("ctrl+n")
        assert texts(app) == [] and app.chat_screen.conversation is None
        await type_and_send(pilot, "A new start.")
        assert len(store.list_conversations()) == 2 and len(store.messages(old.id)) == 2


@app_test
async def test_rename_and_delete_from_the_sidebar(store, tiny_loaded):
    keep = saved_conversation(store, title="Keep me")
    doomed = saved_conversation(store, title="Delete me")
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=doomed.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+b")
        await pilot.press("down", "r")  # the second (older) one: "Keep me"
        assert isinstance(app.screen, PromptScreen)
        field = app.screen.query_one(Input)
        assert field.value == "Keep me"
        field.value = "   "
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen)  # refused, with the reason shown
        assert plain(app.screen.query_one("#prompt-error")) == "a title can't be empty"
        field.value = "Kept [i]forever[/i]"
        await pilot.press("enter")
        assert store.get_conversation(keep.id).title == "Kept [i]forever[/i]"
        assert not isinstance(app.screen, PromptScreen)

        app.chat_screen.conversation_list.focus()
        app.chat_screen.conversation_list.highlighted = [c.id for c in store.list_conversations()].index(doomed.id)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # declined: nothing happens
        assert {c.id for c in store.list_conversations()} == {keep.id, doomed.id}
        await pilot.press("d")
        await pilot.press("y")
        assert [c.id for c in store.list_conversations()] == [keep.id]
        assert app.chat_screen.conversation is None and texts(app) == []  # it was open: a new one took its place
        assert app.chat_screen.conversation_list.option_count == 1


# --- replay ------------------------------------------------------------------------------------------


@app_test
async def test_replay_id_plays_the_conversation_then_continues_it(store, tiny_loaded):
    conversation = saved_conversation(store, texts=("One.", "Two, said the bot.", "Three.", "Four, at last."))
    app = MovieChatApp(engine_for(store, tiny_loaded), replay_id=conversation.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await pilot.press("plus", "plus", "plus")  # ×8
        await wait_until(pilot, lambda: screen.finished)
        shown = screen.shown_views
        assert [v.text for v in shown] == ["One.", "Two, said the bot.", "Three.", "Four, at last."]
        assert "tiny" in plain(shown[1].query_one(".meta"))  # each turn: time and model
        assert "4 tokens" in plain(shown[1].query_one(".meta"))
        assert "finished" in plain(screen.query_one("#replay-header"))
        await pilot.press("escape")
        assert not isinstance(app.screen, ReplayScreen)
        assert app.chat_screen.conversation.id == conversation.id and len(texts(app)) == 4
        await settle(pilot)  # the model loads once the replay is closed
        assert app.engine.model_status == "ready"


@app_test
async def test_replay_steps_turn_by_turn(store, tiny_loaded):
    conversation = saved_conversation(store, texts=("One.", "Two.", "Three."))
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=conversation.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.push_screen(ReplayScreen(*app.engine.transcript(conversation.id), autoplay=False))
        await pilot.pause()
        screen = app.screen
        assert screen.shown_views == []
        for n in (1, 2, 3):
            await pilot.press("n")
            assert [v.text for v in screen.shown_views] == ["One.", "Two.", "Three."][:n]
            assert f"turn {n}/3" in plain(screen.query_one("#replay-header"))
        await pilot.press("n")  # past the end: nothing more
        assert len(screen.shown_views) == 3 and screen.finished


@app_test
async def test_ctrl_o_replays_the_open_conversation(store, tiny_loaded):
    conversation = saved_conversation(store)
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=conversation.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ReplayScreen) and app.screen.conversation.id == conversation.id
        await pilot.press("escape")
        assert app.chat_screen.conversation.id == conversation.id


# --- settings ----------------------------------------------------------------------------------------


@app_test
async def test_settings_are_validated_inline_and_stored_with_the_conversation(store, tiny_loaded):
    conversation = saved_conversation(store)
    app = MovieChatApp(engine_for(store, tiny_loaded), conversation_id=conversation.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")
        dialog = app.screen
        assert isinstance(dialog, SettingsScreen)
        assert app.focused.id == "temperature"
        await pilot.press("tab")
        assert app.focused.id == "top_p"
        dialog.query_one("#temperature", Input).value = "-1"
        await pilot.press("ctrl+s")
        with pytest.raises(SettingsError) as expected:
            GenerationSettings(temperature=-1).validate()
        assert plain(dialog.query_one("#settings-error")) == str(expected.value)
        dialog.query_one("#temperature", Input).value = "0.5"
        dialog.query_one("#top_k", Input).value = "many"
        await pilot.press("ctrl+s")
        assert plain(dialog.query_one("#settings-error")) == "top-k must be a whole number, not 'many'"
        assert store.get_conversation(conversation.id).settings == FAST.to_dict()  # nothing saved
        dialog.query_one("#top_k", Input).value = "20"
        dialog.query_one("#genres", Input).value = "Comedy, horror"
        await pilot.press("enter")
        assert not isinstance(app.screen, SettingsScreen)
        saved = store.get_conversation(conversation.id)
        assert saved.settings["temperature"] == 0.5 and saved.settings["top_k"] == 20
        assert saved.conditioning == {"genres": ["comedy", "horror"]}
        assert "T 0.5" in plain(app.screen.query_one("#status-info"))
        await pilot.press("ctrl+s")
        await pilot.press("escape")  # cancel: unchanged
        assert store.get_conversation(conversation.id).settings == saved.settings


@app_test
async def test_settings_of_a_new_conversation_are_stored_when_it_is_created(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")
        app.screen.query_one("#max_new_tokens", Input).value = "5"
        app.screen.query_one("#genres", Input).value = "sci-fi"
        await pilot.press("ctrl+s")
        await type_and_send(pilot, "Beam me up.")
        [conversation] = store.list_conversations()
        assert conversation.settings["max_new_tokens"] == 5 and conversation.conditioning["genres"] == ["sci-fi"]
        assert store.messages(conversation.id)[1].token_count <= 5


# --- model loading -------------------------------------------------------------------------------------


@app_test
async def test_a_model_that_fails_to_load_is_reported_and_saved_chats_still_work(store):
    conversation = saved_conversation(store)

    def broken(spec):
        raise ModelLoadError(f"cannot load {spec!r}: no such directory or hub id")

    app = MovieChatApp(ChatEngine(store, "nope[/]", FAST, loader=broken))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.engine.model_status == "failed"
        assert "nope[/] failed to load" in plain(app.screen.query_one("#status-info"))
        assert "cannot load 'nope[/]'" in plain(app.screen.query_one(".load-error"))
        await type_and_send(pilot, "Hello?")
        assert len(store.list_conversations()) == 1  # nothing sent, nothing saved
        assert app.chat_screen.chat_input.text == "Hello?"  # kept for later
        await pilot.press("ctrl+b", "enter")
        assert texts(app) == [("user", "Where were you?"), ("bot", "At the movies.")]
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ReplayScreen)


@app_test
async def test_the_model_loads_in_the_background_with_a_visible_state(store, tiny_loaded):
    import threading

    release = threading.Event()

    def slow_loader(spec):
        release.wait(10)
        return tiny_loaded

    app = MovieChatApp(ChatEngine(store, "tiny", FAST, loader=slow_loader))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.engine.model_status == "loading" and "loading tiny" in plain(app.screen.query_one("#status-info"))
        await pilot.press("f1")  # the UI answers while the model loads
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        release.set()
        await settle(pilot)
        assert app.engine.model_status == "ready" and "loading" not in plain(app.screen.query_one("#status-info"))


# --- discoverability ---------------------------------------------------------------------------------------


@app_test
async def test_the_command_palette_offers_every_action(store, tiny_loaded):
    saved_conversation(store, title="Casablanca talk")
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {title for title, _, _ in COMMANDS} <= titles
        for _, _, action in COMMANDS:  # each runs on the chat screen, or on the app ("app." actions)
            namespace, _, name = action.rpartition(".")
            assert hasattr(app if namespace == "app" else app.chat_screen, f"action_{name}"), action
        await pilot.press("ctrl+p")
        await pilot.press(*"setti")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.press(*"casab")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat_screen.conversation is not None)
        assert app.chat_screen.conversation.title == "Casablanca talk"


@app_test
async def test_help_screen_and_theme_toggle(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        dark = app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark is not dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark is dark


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
