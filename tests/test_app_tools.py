"""The app's tools besides chatting, through Textual's pilot: who you talk to (f2), messages sent
while a reply streams, copying (f3, the palette) and switching the model."""

from __future__ import annotations

import pytest
from tui_pilot import FAST, WORDY, app_test, engine_for, plain, settle, texts, type_and_send, wait_until

from moviechat_tui.core.dialogue import Conditioning
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.paths import data_dir
from moviechat_tui.tui.app import MovieChatApp
from moviechat_tui.tui.model_picker import ModelScreen
from moviechat_tui.tui.persona_picker import PersonaScreen
from moviechat_tui.tui.replay import ReplayScreen

RICK = Conditioning("Rick", "Ilsa", "Casablanca", 1942, ("drama", "romance", "war"))


async def pick_rick(pilot):
    await pilot.press("f2")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, PersonaScreen))
    await pilot.press(*"casabl", "enter", "r", "i", "enter", *"ilsa", "enter")
    await pilot.pause()


@app_test
async def test_pick_who_you_talk_to_before_and_during_a_conversation(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(110, 30)) as pilot:
        await settle(pilot)
        await pick_rick(pilot)
        assert not isinstance(app.screen, PersonaScreen) and app.chat_screen.chat_input.has_focus
        assert "Rick (to Ilsa) · Casablanca (1942)" in plain(app.screen.query_one("#status-title"))
        await type_and_send(pilot, "Play it, Sam.")
        [conversation] = store.list_conversations()
        assert Conditioning.from_dict(conversation.conditioning) == RICK
        assert [v.speaker for v in app.chat_screen.chat_log.views()] == ["YOU", "RICK"]
        assert "Rick · Casablanca" in str(app.chat_screen.conversation_list.get_option_at_index(0).prompt)

        # Another character of the same film, from the next reply; the reply labels follow.
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, PersonaScreen))
        assert app.screen.query_one("#persona-film").value == "Casablanca (1942)"
        await pilot.press(*"ilsa", "enter", "ctrl+s")
        await pilot.pause()
        stored = Conditioning.from_dict(store.get_conversation(conversation.id).conditioning)
        assert (stored.character, stored.partner) == ("Ilsa", "Ilsa")
        assert app.chat_screen.chat_log.views()[-1].speaker == "ILSA"

        # A new conversation starts with the persona on screen; the replay shows it.
        await pilot.press("ctrl+n")
        await type_and_send(pilot, "Again?")
        assert store.list_conversations()[0].conditioning["character"] == "Ilsa"
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen))
        assert "Ilsa (to Ilsa) · Casablanca (1942)" in plain(app.screen.query_one("#replay-header"))


@app_test
async def test_enter_while_a_reply_streams_queues_the_message(store, slow_loaded):
    app = MovieChatApp(engine_for(store, slow_loaded, WORDY.replace(max_new_tokens=30)))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        chat = app.chat_screen.chat
        chat.chat_input.text = "Where did I just come back from?"
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.generating)
        chat.chat_input.text = "And what is my name?"
        await pilot.press("enter")
        assert chat.chat_input.text == ""  # the box is free for the next one
        banner = app.screen.query_one("#edit-banner")
        assert banner.display and "waiting to send “And what is my name?” when the reply ends" in plain(banner)
        await settle(pilot)
        await wait_until(pilot, lambda: not chat.outbox and not chat.generating and len(texts(app)) == 4)
        await settle(pilot)
        [conversation] = store.list_conversations()
        messages = store.messages(conversation.id)
        assert [(m.role, m.text) for m in messages][::2] == [
            ("user", "Where did I just come back from?"), ("user", "And what is my name?")]  # two, not glued
        assert all(m.role == "bot" and m.status == "complete" for m in messages[1::2])
        assert not banner.display


@app_test
async def test_a_waiting_message_can_be_taken_back(store, slow_loaded):
    app = MovieChatApp(engine_for(store, slow_loaded, WORDY.replace(max_new_tokens=30)))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        chat = app.chat_screen.chat
        chat.chat_input.text = "First."
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat.generating)
        chat.chat_input.text = "Second, on second thought."
        await pilot.press("enter")
        await pilot.press("up")  # in the empty box: back it comes
        assert chat.chat_input.text == "Second, on second thought." and not chat.outbox
        await settle(pilot)
        assert [m.text for m in store.messages(store.list_conversations()[0].id) if m.role == "user"] == ["First."]
        assert chat.chat_input.text == "Second, on second thought."


@app_test
async def test_copy_the_last_reply_and_the_conversation(store, tiny_loaded):
    app = MovieChatApp(engine_for(store, tiny_loaded))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        assert app.clipboard == "" and not (data_dir() / "clipboard.txt").exists()  # nothing to copy yet
        await type_and_send(pilot, "Say something.")
        reply = texts(app)[-1][1]
        await pilot.press("f3")
        assert app.clipboard == reply
        assert (data_dir() / "clipboard.txt").read_text() == reply  # for terminals without OSC 52
        app.chat_screen.chat_log.views()[0].focus()  # a selected message: c copies it
        await pilot.press("c")
        assert app.clipboard == "Say something."
        await app.chat_screen.run_action("copy_conversation")
        copied = app.clipboard
        assert copied.startswith("Say something.\n\nYOU  ") and copied.rstrip().endswith(reply)
        assert (data_dir() / "clipboard.txt").read_text() == copied
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("conversation #1" in n and str(data_dir() / "clipboard.txt") in n for n in notes)


@pytest.fixture(scope="module")
def chatml_loaded(tiny_chatml_dir):
    return load_model(str(tiny_chatml_dir))


async def type_a_model(pilot):
    app = pilot.app
    await app.chat_screen.run_action("switch_model")
    await wait_until(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.query("#model-typed"))
    app.screen.query_one("#model-typed").focus()


@app_test
async def test_switch_the_model_from_the_palette(store, tiny_loaded, chatml_loaded):
    def loader(spec):
        if spec == "tiny":
            return tiny_loaded
        if spec == "chatml":
            return chatml_loaded
        raise ModelLoadError(f"no model directory at {spec}")

    app = MovieChatApp(ChatEngine(store, "tiny", FAST.replace(temperature=1.0, seed=1), loader=loader))
    async with app.run_test(size=(110, 30)) as pilot:
        await settle(pilot)
        await type_and_send(pilot, "Hello?")
        await type_a_model(pilot)
        await pilot.press(*"/nowhere", "enter")
        await wait_until(pilot, lambda: app.engine.model_switch.done)
        await pilot.pause()
        assert app.engine.model_spec == "tiny" and "tiny" in plain(app.screen.query_one("#status-info"))
        assert any("no model directory at /nowhere" in n.message for n in app._notifications)

        read, read_ahead = [], app.engine.read_ahead
        app.engine.read_ahead = lambda conversation_id: read.append(conversation_id) or read_ahead(conversation_id)
        await type_a_model(pilot)
        await pilot.press(*"chatml", "enter")
        await wait_until(pilot, lambda: app.engine.model_switch.done)
        await pilot.pause()
        assert app.engine.model_spec == "chatml" and "chatml" in plain(app.screen.query_one("#status-info"))
        assert read == [app.chat_screen.conversation.id]  # the new model reads the open conversation ahead
        await type_and_send(pilot, "And now?")
        models = [m.model for m in store.messages(store.list_conversations()[0].id) if m.role == "bot"]
        assert models == [tiny_loaded.name, chatml_loaded.name]
