"""The page's message actions (AppTest, tiny model): regenerate and edit keep versions, ‹ › moves
between them, fork opens a copy, replies are rated."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from moviechat_tui.core.store import Store

APP = str(Path(__file__).resolve().parent.parent / "web" / "app.py")


@pytest.fixture
def db_path(tmp_path, monkeypatch, tiny_gpt2_dir):
    path = tmp_path / "chat.db"
    monkeypatch.setenv("MOVIECHAT_MODEL", str(tiny_gpt2_dir))
    monkeypatch.setenv("MOVIECHAT_DB", str(path))
    return path


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s


def page_with(*lines: str) -> AppTest:
    """A new session that said `lines`, with short, varied replies (seedless sampling)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.number_input(key="setting:max_new_tokens:new").set_value(4).run()
    at.slider(key="setting:temperature:new").set_value(1.5).run()
    for line in lines:
        at.chat_input[0].set_value(line).run()
        assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> list[str]:
    return [m.text[0].value for m in at.chat_message]


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def test_regenerate_keeps_the_old_reply_one_step_away(db_path, store):
    at = page_with("Hi.")
    [c] = store.list_conversations()
    first = store.messages(c.id)[1]
    assert not [b for b in at.button if b.key and b.key.startswith("prev:")]  # one version: no ‹ ›
    click(at, f"regenerate:{first.id}")
    second = store.messages(c.id)[1]
    assert second.id != first.id and (second.alternative, second.alternatives) == (2, 2)
    assert shown(at) == ["Hi.", second.text]
    assert "2/2" in [caption.value for caption in at.chat_message[1].caption]
    assert at.button(key=f"next:{second.id}").disabled and not at.button(key=f"prev:{second.id}").disabled
    click(at, f"prev:{second.id}")
    assert shown(at) == ["Hi.", first.text] and store.messages(c.id)[1].id == first.id


def test_editing_an_earlier_message_starts_a_new_branch(db_path, store):
    at = page_with("My name is Ilsa.", "Where were we?")
    [c] = store.list_conversations()
    first = store.messages(c.id)[0]
    click(at, f"edit:{first.id}")
    assert at.text_area(key=f"edit-text:{first.id}").value == "My name is Ilsa."
    at.text_area(key=f"edit-text:{first.id}").set_value("My name is Rick.")
    at.form_submit_button[0].click().run()  # Send
    assert not at.exception, at.exception
    branch = store.messages(c.id)
    assert [m.text for m in branch][:1] == ["My name is Rick."] and len(branch) == 2
    assert shown(at) == [m.text for m in branch]
    click(at, f"prev:{branch[0].id}")  # the old branch, with everything that followed
    assert shown(at)[0::2] == ["My name is Ilsa.", "Where were we?"]


def test_an_empty_edit_is_refused_and_nothing_changes(db_path, store):
    at = page_with("Hello.")
    [c] = store.list_conversations()
    user = store.messages(c.id)[0]
    click(at, f"edit:{user.id}")
    at.text_area(key=f"edit-text:{user.id}").set_value("   ")
    at.form_submit_button[0].click().run()
    assert any("empty message" in w.value for w in at.warning)
    assert store.get_conversation(c.id).message_count == 2
    at.form_submit_button[1].click().run()  # Cancel
    assert shown(at) == [m.text for m in store.messages(c.id)]


def test_fork_opens_a_copy_up_to_that_message(db_path, store):
    at = page_with("One.", "Two.")
    [c] = store.list_conversations()
    reply = store.messages(c.id)[1]
    click(at, f"fork:{reply.id}")
    forked = next(x for x in store.list_conversations() if x.id != c.id)
    assert at.query_params["conversation"] == str(forked.id)
    assert shown(at) == [m.text for m in store.messages(c.id)[:2]] == [m.text for m in store.messages(forked.id)]
    assert any(f"#{forked.id}" in s.value for s in at.success)


def test_rating_a_reply_is_stored(db_path, store):
    at = page_with("Hi.")
    [c] = store.list_conversations()
    bot = store.messages(c.id)[1]
    at.feedback(key=f"rating:{bot.id}").set_value(1).run()
    assert store.get_message(bot.id).rating == "up"
    at.pills(key=f"ooc:{bot.id}").set_value("Out of character").run()
    assert (store.get_message(bot.id).rating, store.get_message(bot.id).out_of_character) == ("up", True)
    at.feedback(key=f"rating:{bot.id}").set_value(0).run()
    assert store.get_message(bot.id).rating == "down"
    # a new session shows what is stored
    again = AppTest.from_file(APP, default_timeout=60)
    again.query_params["conversation"] = str(c.id)
    again.run()
    assert again.feedback(key=f"rating:{bot.id}").value == 0
    assert again.pills(key=f"ooc:{bot.id}").value == "Out of character"
