"""The store's conversation tree: alternatives, the branch on screen, ratings, grouped writes."""

from __future__ import annotations

import pytest

from moviechat_tui.core.store import Store, UnknownMessage


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tree.db") as store:
        yield store


def texts(messages):
    return [m.text for m in messages]


def test_messages_follow_the_branch_on_screen_and_each_fork_remembers_its_choice(store):
    c = store.create_conversation()
    hi = store.add_message(c.id, "user", "Hi.")
    first = store.add_message(c.id, "bot", "Hello.")
    store.add_message(c.id, "user", "Who are you?")
    store.add_message(c.id, "bot", "Nobody.")
    second = store.add_message(c.id, "bot", "Rick.", parent_id=hi.id)  # a regenerated first reply
    assert (second.position, second.alternative, second.alternatives) == (1, 2, 2)
    assert texts(store.messages(c.id)) == ["Hi.", "Rick."]  # a new version is shown
    store.add_message(c.id, "user", "Rick who?")
    store.show(first.id)  # back to the first reply: what followed it is back too
    assert texts(store.messages(c.id)) == ["Hi.", "Hello.", "Who are you?", "Nobody."]
    assert [(m.alternative, m.alternatives) for m in store.messages(c.id)] == [(1, 1), (1, 2), (1, 1), (1, 1)]
    store.show(second.id)
    assert texts(store.messages(c.id)) == ["Hi.", "Rick.", "Rick who?"]
    assert texts(store.siblings(first.id)) == ["Hello.", "Rick."]
    assert texts(store.tree(c.id)) == ["Hi.", "Hello.", "Rick.", "Who are you?", "Rick who?", "Nobody."]
    assert store.get_conversation(c.id).message_count == 6


def test_a_new_first_message_and_the_end_of_a_branch(store):
    c = store.create_conversation()
    old = store.add_message(c.id, "user", "Helo.")
    store.add_message(c.id, "bot", "What?")
    new = store.add_message(c.id, "user", "Hello.", parent_id=None)  # the first message, edited
    assert (new.position, new.alternative, new.alternatives) == (0, 2, 2)
    assert texts(store.messages(c.id)) == ["Hello."]
    store.show(old.id)
    assert texts(store.messages(c.id)) == ["Helo.", "What?"]
    store.end_branch_at(old.id)
    assert texts(store.messages(c.id)) == ["Helo."] and store.shown_leaf_id(c.id) == old.id
    assert store.add_message(c.id, "bot", "Hi.").parent_id == old.id  # new messages follow the shown end
    assert texts(store.branch_to(old.id)) == ["Helo."]


def test_branch_to_is_what_led_to_a_message_whatever_is_on_screen(store):
    c = store.create_conversation()
    store.add_message(c.id, "user", "a")
    b = store.add_message(c.id, "bot", "b")
    d = store.add_message(c.id, "user", "c")
    store.add_message(c.id, "user", "c2", parent_id=b.id)
    assert texts(store.branch_to(d.id)) == ["a", "b", "c"]
    assert texts(store.messages(c.id)) == ["a", "b", "c2"]


def test_a_parent_from_another_conversation_is_refused_and_nothing_is_written(store):
    one, two = store.create_conversation(), store.create_conversation()
    elsewhere = store.add_message(two.id, "user", "elsewhere")
    with pytest.raises(UnknownMessage, match=str(elsewhere.id)):
        store.add_message(one.id, "bot", "lost", parent_id=elsewhere.id)
    assert store.get_conversation(one.id).message_count == 0


def test_ratings_are_stored_per_reply(store):
    c = store.create_conversation()
    store.add_message(c.id, "user", "Hi.")
    bot = store.add_message(c.id, "bot", "Hello.")
    assert (bot.rating, bot.out_of_character, bot.rated_at) == (None, False, None)
    rated = store.rate_message(bot.id, rating="up")
    assert (rated.rating, rated.out_of_character) == ("up", False) and rated.rated_at
    rated = store.rate_message(bot.id, out_of_character=True)
    assert (rated.rating, rated.out_of_character) == ("up", True)
    assert store.rate_message(bot.id, rating=None).rating is None
    with pytest.raises(ValueError, match="rating"):
        store.rate_message(bot.id, rating="meh")
    assert store.messages(c.id)[1].out_of_character is True


def test_a_transaction_commits_its_writes_together_or_not_at_all(store):
    def half():
        c = store.create_conversation("half")
        store.add_message(c.id, "user", "written?")
        assert texts(store.messages(c.id)) == ["written?"]  # reads inside see the writes so far
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.transaction(half)
    assert store.list_conversations() == [] and store.search("written") == []

    def whole():
        c = store.create_conversation("whole")
        store.add_message(c.id, "user", "written")
        return c

    c = store.transaction(whole)
    assert texts(store.messages(c.id)) == ["written"]


def test_deleting_a_conversation_takes_its_whole_tree(store):
    c = store.create_conversation()
    hi = store.add_message(c.id, "user", "Hi.")
    store.add_message(c.id, "bot", "one")
    store.add_message(c.id, "bot", "two", parent_id=hi.id)
    store.delete_conversation(c.id)
    assert store.db.execute("select count(*) from messages").fetchone()[0] == 0
    assert store.search("two") == []
