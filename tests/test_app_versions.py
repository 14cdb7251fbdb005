"""The terminal app's versions, driven through Textual's pilot with a tiny random model: select a
message, step between its versions, edit an earlier message, regenerate, fork, rate."""

from __future__ import annotations

from tui_pilot import app_test, settle

from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.settings import GenerationSettings
from moviechat_tui.tui.app import MovieChatApp
from moviechat_tui.tui.widgets import TurnView

# Sampling, so a regenerated reply differs from the first one.
VARIED = GenerationSettings(temperature=1.5, max_new_tokens=5, repetition_penalty=1.0, no_repeat_ngram_size=0)


def open_app(store, loaded, conversation_id=None):
    return MovieChatApp(ChatEngine(store, "tiny", VARIED, loader=lambda _: loaded), conversation_id=conversation_id)


def conversation_with_versions(store):
    """Hi. -> (Hello. | Rick.) ; Hello. -> Who are you? -> Nobody.  On screen: Hi., Rick."""
    c = store.create_conversation("versions", model_spec="tiny", settings=VARIED.to_dict())
    hi = store.add_message(c.id, "user", "Hi.")
    store.add_message(c.id, "bot", "Hello.", model="tiny")
    store.add_message(c.id, "user", "Who are you?")
    store.add_message(c.id, "bot", "Nobody.", model="tiny")
    store.add_message(c.id, "bot", "Rick.", model="tiny", parent_id=hi.id)
    return c


def shown(app):
    return [view.text for view in chat(app).chat_log.views()]


def chat(app):
    return app.chat_screen.chat


def meta(view) -> str:
    return view.query_one(".meta").visual.plain


@app_test
async def test_select_a_reply_and_step_between_its_versions(store, tiny_loaded):
    c = conversation_with_versions(store)
    app = open_app(store, tiny_loaded, c.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert shown(app) == ["Hi.", "Rick."]
        await pilot.press("shift+tab")  # from the message box to the last message
        reply = chat(app).chat_log.views()[-1]
        assert app.focused is reply and "‹ 2/2 ›" in meta(reply)
        await pilot.press("left")
        await settle(pilot)
        assert shown(app) == ["Hi.", "Hello.", "Who are you?", "Nobody."]  # what followed comes along
        assert app.focused is chat(app).chat_log.views()[1] and "‹ 1/2 ›" in meta(app.focused)
        await pilot.press("left")  # the first version stays first
        await settle(pilot)
        assert "‹ 1/2 ›" in meta(chat(app).chat_log.views()[1])
        assert [m.text for m in store.messages(c.id)] == shown(app)
        await pilot.press("down", "down", "escape")
        assert chat(app).chat_input.has_focus
        chat(app).chat_input.text = "Go on."  # continues the branch on screen
        await pilot.press("enter")
        await settle(pilot)
        assert [m.text for m in store.messages(c.id)][:5] == ["Hi.", "Hello.", "Who are you?", "Nobody.", "Go on."]


@app_test
async def test_edit_an_earlier_message_as_a_new_version(store, tiny_loaded):
    c = conversation_with_versions(store)
    store.show(next(m for m in store.tree(c.id) if m.text == "Hello.").id)
    app = open_app(store, tiny_loaded, c.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert shown(app) == ["Hi.", "Hello.", "Who are you?", "Nobody."]
        chat(app).chat_log.views()[0].focus()
        await pilot.press("e")
        assert chat(app).chat_input.has_focus and chat(app).chat_input.text == "Hi."
        assert "editing message 1" in chat(app).edit_banner.visual.plain
        chat(app).chat_input.text = "Good evening."
        await pilot.press("enter")
        await settle(pilot)
        branch = store.messages(c.id)
        assert [m.text for m in branch][:1] == ["Good evening."] and len(branch) == 2
        assert shown(app) == [m.text for m in branch]
        assert "‹ 2/2 ›" in meta(chat(app).chat_log.views()[0])
        assert not chat(app).edit_banner.display
        chat(app).chat_log.views()[0].focus()
        await pilot.press("left")  # the old first message, with everything that followed it
        await settle(pilot)
        assert shown(app) == ["Hi.", "Hello.", "Who are you?", "Nobody."]
        await pilot.press("down", "down", "e", "escape")  # esc cancels an edit
        assert not chat(app).editing and chat(app).chat_input.text == "" and not chat(app).edit_banner.display
        await pilot.press("ctrl+o")  # the replay shows the versions too
        await settle(pilot)
        assert "‹ 1/2 ›" in meta(app.screen.query_one("#replay-log").query_one(".message"))


@app_test
async def test_regenerate_a_reply_keeps_the_old_one(store, tiny_loaded):
    app = open_app(store, tiny_loaded)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        chat(app).chat_input.text = "Hello there."
        await pilot.press("enter")
        await settle(pilot)
        [c] = store.list_conversations()
        first = store.messages(c.id)[1]
        chat(app).chat_log.views()[1].focus()
        await pilot.press("r")
        await settle(pilot)
        second = store.messages(c.id)[1]
        assert second.id != first.id and shown(app) == ["Hello there.", second.text]
        assert "‹ 2/2 ›" in meta(chat(app).chat_log.views()[1])
        assert app.focused is chat(app).chat_log.views()[1]  # selected: ← shows the earlier reply
        await pilot.press("left")
        await settle(pilot)
        assert shown(app) == ["Hello there.", first.text]
        assert [m.id for m in store.siblings(second.id)] == [first.id, second.id]


@app_test
async def test_rate_a_reply_and_fork_the_conversation(store, tiny_loaded):
    c = conversation_with_versions(store)
    app = open_app(store, tiny_loaded, c.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        reply = chat(app).chat_log.views()[1]
        reply.focus()
        reply_id = reply.message.id
        await pilot.press("plus")
        await settle(pilot)  # saved on a worker, never on the event loop
        assert store.get_message(reply_id).rating == "up" and "rated up" in meta(reply)
        await pilot.press("o")
        await settle(pilot)
        await pilot.press("minus")
        await settle(pilot)
        stored = store.get_message(reply_id)
        assert (stored.rating, stored.out_of_character) == ("down", True)
        assert "rated down · out of character" in meta(reply)
        await pilot.press("minus")  # the same key again takes the rating back
        await settle(pilot)
        assert store.get_message(reply_id).rating is None
        chat(app).chat_log.views()[0].focus()
        await pilot.press("r", "plus")  # not for your own messages: nothing happens
        await settle(pilot)
        assert store.get_conversation(c.id).message_count == 5
        await pilot.press("f")
        await settle(pilot)
        forked = chat(app).conversation
        assert forked.id != c.id and shown(app) == ["Hi."]
        assert [m.text for m in store.messages(forked.id)] == ["Hi."]
        assert chat(app).chat_input.has_focus


@app_test
async def test_a_message_can_be_selected_with_the_mouse_and_keys_wait_for_the_reply(store, tiny_loaded):
    c = conversation_with_versions(store)
    app = open_app(store, tiny_loaded, c.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.click(TurnView, offset=(2, 1))
        assert isinstance(app.focused, TurnView)
        chat(app).generating = True  # as while a reply streams
        chat(app).chat_log.views()[1].focus()
        await pilot.press("left")
        assert shown(app) == ["Hi.", "Rick."]  # refused with a notice
        chat(app).generating = False
