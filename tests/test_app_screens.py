"""The Textual app's screens through the pilot: saved conversations, replay, settings, model loading,
the command palette and help."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_pilot import (
    FAST, app_test, engine_for, footer_actions, plain, saved_conversation, settle, texts, type_and_send,
    wait_until,
)

from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.loading import ModelLoadError
from moviechat_tui.core.settings import GenerationSettings, SettingsError
from moviechat_tui.tui import replying
from moviechat_tui.tui.app import MovieChatApp
from moviechat_tui.tui.chat_screen import COMMANDS
from moviechat_tui.tui.replay import ReplayScreen
from moviechat_tui.tui.screens import ConfirmScreen, HelpScreen, PromptScreen, SettingsScreen
from moviechat_tui.tui.widgets import ConversationList


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


@app_test
async def test_a_conversation_opened_while_the_model_loads_is_read_ahead_once_it_is_ready(store, tiny_loaded):
    import threading

    old = saved_conversation(store)
    release = threading.Event()
    engine = ChatEngine(store, "tiny", FAST, loader=lambda spec: release.wait(10) and tiny_loaded)
    read, read_ahead = [], engine.read_ahead

    def recorded(conversation_id):
        thread = read_ahead(conversation_id)
        read.append((conversation_id, thread is not None))
        return thread

    engine.read_ahead = recorded
    app = MovieChatApp(engine, conversation_id=old.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert engine.model_status == "loading" and read == [(old.id, False)]  # nothing to read with yet
        release.set()
        await settle(pilot)
        assert read == [(old.id, False), (old.id, True)]  # read as soon as the model is there


@app_test
async def test_a_first_message_sent_while_the_model_loads_shows_its_conversation_and_esc(store, tiny_loaded,
                                                                                        monkeypatch):
    import threading
    import time

    monkeypatch.setattr(replying, "FOOTER_DELAY", 0.05)
    release = threading.Event()
    engine = ChatEngine(store, "tiny", FAST, loader=lambda spec: release.wait(60) and tiny_loaded)
    send = engine.send
    # Saving the message outlasts the footer's wait (a busy database, a load on the same two cores).
    monkeypatch.setattr(engine, "send", lambda *args, **kwargs: time.sleep(0.5) or send(*args, **kwargs))
    app = MovieChatApp(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.chat_screen.chat_input.text = "Hello while it loads."
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Hello while it loads." in plain(app.screen.query_one("#status-title")))
        await wait_until(pilot, lambda: "stop" in footer_actions(app))
        assert app.engine.model_status == "loading" and app.chat_screen.chat.generating
        release.set()
        await settle(pilot)
        assert [m.role for m in store.messages(store.list_conversations()[0].id)] == ["user", "bot"]


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
