"""The SQLite conversation store: schema, conversations, messages, search, bad input.

Files it must not touch and migrations: test_store_files.py; locks, threads, processes and
crashes: test_store_concurrency.py.
"""

from __future__ import annotations

import time

import pytest
from store_helpers import chat, db_path, store  # noqa: F401 (pytest fixtures)

from moviechat_tui.core.store import Store, StoreError, UnknownConversation, UnknownMessage


# --- schema -----------------------------------------------------------------------------------


def test_schema_pragmas_and_parent_dirs(store, db_path):
    assert db_path.is_file()
    db = store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION == 2
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert set(db["conversations"].columns_dict) == {
        "id", "title", "created_at", "updated_at", "model_spec", "settings", "conditioning", "shown_root_id"}
    assert set(db["messages"].columns_dict) == {
        "id", "conversation_id", "parent_id", "shown_child_id", "position", "role", "text", "created_at",
        "status", "model", "token_count", "latency_ms", "settings", "rating", "out_of_character", "rated_at"}
    assert {(fk.column, fk.other_table, fk.on_delete) for fk in db["messages"].foreign_keys} == {
        ("conversation_id", "conversations", "CASCADE"), ("parent_id", "messages", "CASCADE"),
        ("shown_child_id", "messages", "SET NULL")}
    assert any(i.columns == ["conversation_id", "position"] for i in db["messages"].indexes)
    assert any(i.columns == ["updated_at"] for i in db["conversations"].indexes)
    assert db["messages_fts"].exists()


def test_reopen_keeps_everything(db_path):
    with Store(db_path) as store:
        conversation = chat(store, "hi", "hello")
    with Store(db_path) as store:
        assert [m.text for m in store.messages(conversation.id)] == ["hi", "hello"]


# --- conversations ----------------------------------------------------------------------------


def test_conversation_round_trip(store):
    created = store.create_conversation("  A  night\n at the movies ", model_spec="gpt2:tiny",
                                        settings={"temperature": 0.7}, conditioning={"genres": ["comedy"]})
    assert created.title == "A night at the movies"
    got = store.get_conversation(created.id)
    assert got == created
    assert (got.model_spec, got.settings, got.conditioning, got.message_count) == (
        "gpt2:tiny", {"temperature": 0.7}, {"genres": ["comedy"]}, 0)
    assert got.created_at.endswith("Z") and got.created_at == got.updated_at

    renamed = store.rename_conversation(created.id, "  Casablanca ")
    assert renamed.title == "Casablanca" and renamed.updated_at >= created.updated_at
    updated = store.update_conversation(created.id, settings={"top_p": 0.9})
    assert (updated.title, updated.model_spec, updated.settings, updated.conditioning) == (
        "Casablanca", "gpt2:tiny", {"top_p": 0.9}, {"genres": ["comedy"]})
    assert store.rename_conversation(created.id, "   ").title == ""


def test_list_newest_first_and_limit(store):
    first, second, third = (store.create_conversation(name) for name in ("first", "second", "third"))
    time.sleep(0.002)  # updated_at has millisecond resolution
    store.add_message(first.id, "user", "bump")
    listed = store.list_conversations()
    assert [c.id for c in listed] == [first.id, third.id, second.id]
    assert [c.message_count for c in listed] == [1, 0, 0]
    assert [c.id for c in store.list_conversations(limit=2)] == [first.id, third.id]


def test_list_query_matches_title_literally_or_message_words(store):
    percent = store.create_conversation("100% real")
    underscore = store.create_conversation("under_score")
    plain = chat(store, "Where is the Maltese falcon?", title="plain")
    assert [c.id for c in store.list_conversations("%")] == [percent.id]
    assert [c.id for c in store.list_conversations("_")] == [underscore.id]
    assert [c.id for c in store.list_conversations("REAL")] == [percent.id]
    assert [c.id for c in store.list_conversations("maltese")] == [plain.id]
    assert store.list_conversations("falcon nowhere") == []
    assert len(store.list_conversations("  ")) == len(store.list_conversations("\x00")) == 3
    assert store.search("\x00") == []


def test_delete_conversation_cascades(store):
    doomed = chat(store, "rosebud", "what?")
    kept = chat(store, "rosebud again")
    store.delete_conversation(doomed.id)
    with pytest.raises(UnknownConversation):
        store.get_conversation(doomed.id)
    assert store.db.execute("select count(*) from messages where conversation_id = ?",
                            [doomed.id]).fetchone()[0] == 0
    assert [c.id for c, _ in store.search("rosebud")] == [kept.id]
    # ids are never reused, so a stale window cannot write into a newer conversation
    assert store.create_conversation().id > kept.id


# --- messages ---------------------------------------------------------------------------------


def test_messages_positions_and_metadata(store):
    conversation = store.create_conversation()
    user = store.add_message(conversation.id, "user", "Who are you?")
    bot = store.add_message(conversation.id, "bot", "", status="partial", model="gpt2:tiny",
                            settings={"temperature": 0.8})
    assert (user.position, bot.position) == (0, 1)
    assert store.get_conversation(conversation.id).updated_at == bot.created_at
    store.update_message(bot.id, text="Nobody.", status="complete", token_count=3, latency_ms=12.5)
    got = store.get_message(bot.id)
    assert (got.text, got.status, got.model, got.token_count, got.latency_ms, got.settings) == (
        "Nobody.", "complete", "gpt2:tiny", 3, 12.5, {"temperature": 0.8})
    assert store.messages(conversation.id) == [user, got]
    store.update_message(bot.id)  # nothing to change is fine
    assert store.get_message(bot.id) == got


@pytest.mark.parametrize("text", [
    "nul\x00in the middle\x00",
    "".join(map(chr, range(32))) + "\x7f\x85\u2028",
    "emoji 🎬 and RTL שלום and combining e\u0301",
    "x" * 1_000_000,
    "",
], ids=["nul", "control", "unicode", "1MB", "empty"])
def test_text_round_trips_exactly(db_path, text):
    with Store(db_path) as store:
        conversation = store.create_conversation()
        added = store.add_message(conversation.id, "user", text)
        bot = store.add_message(conversation.id, "bot", "")
        store.update_message(bot.id, text=text)
    with Store(db_path) as store:
        assert [m.text for m in store.messages(conversation.id)] == [text, text]
        assert store.get_message(added.id).text == text


# --- search -----------------------------------------------------------------------------------


def test_search_finds_words_and_follows_updates(store):
    conversation = chat(store, "I'm going to make him an offer", "He can't refuse?")
    [(found_conversation, message)] = store.search("OFFER")
    assert found_conversation.id == conversation.id and message.position == 0
    assert [m.position for _, m in store.search("refuse")] == [1]
    store.update_message(message.id, text="changed my mind")
    assert store.search("offer") == []
    assert [m.id for _, m in store.search("mind")] == [message.id]
    assert store.search("") == store.search("   ") == []


def test_search_equal_matches_newest_first(store):
    older = chat(store, "same old line")
    newer = chat(store, "same old line")
    assert [c.id for c, _ in store.search("same line")] == [newer.id, older.id]
    assert len(store.search("same", limit=1)) == 1


@pytest.mark.parametrize("query, matches", [
    ('"', False), ('""', False), ('"unbalanced', False), ("***", False), ("-", False), (":", False),
    ("(", False), ("^x", False), ("fox\x00", True), ("col:*", False), ("text:hello", False),
    ("fo*", False),  # not a prefix query
    ("hello -world", True), ("hello NOT fox", True),  # not exclusions
    ("NEAR(", True), ("AND", True), ("OR NOT", True), ('"quoted" fox', True), ('a"b', True),
    ("fox AND missing", False),  # every word must be there
])
def test_search_syntax_characters_are_literal(store, query, matches):
    conversation = chat(store, 'hello world, said the "quoted" fox: a*b - NEAR AND OR NOT')
    assert [c.id for c, _ in store.search(query)] == ([conversation.id] if matches else [])
    assert [c.id for c in store.list_conversations(query)] == ([conversation.id] if matches else [])


# --- bad input --------------------------------------------------------------------------------


def test_bad_role_status_text_and_settings(store):
    conversation = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(conversation.id, "assistant", "hi")
    with pytest.raises(ValueError, match="status"):
        store.add_message(conversation.id, "bot", "hi", status="done")
    with pytest.raises(ValueError, match="string"):
        store.add_message(conversation.id, "user", b"bytes")
    with pytest.raises(ValueError, match="JSON"):
        store.add_message(conversation.id, "bot", "hi", settings={"oops": object()})
    assert store.messages(conversation.id) == []
    message = store.add_message(conversation.id, "bot", "hi")
    with pytest.raises(ValueError, match="status"):
        store.update_message(message.id, status="finished")
    with pytest.raises(ValueError, match="title"):
        store.create_conversation(None)


def test_unknown_ids_name_the_id(store):
    for call in (lambda: store.get_conversation(4242), lambda: store.rename_conversation(4242, "x"),
                 lambda: store.update_conversation(4242, model_spec="x"), lambda: store.delete_conversation(4242),
                 lambda: store.add_message(4242, "user", "hi"), lambda: store.messages(4242),
                 lambda: store.tree(4242)):
        with pytest.raises(UnknownConversation, match="4242"):
            call()
    for call in (lambda: store.get_message(777), lambda: store.update_message(777, text="x"),
                 lambda: store.rate_message(777, rating="up"), lambda: store.branch_to(777), lambda: store.siblings(777),
                 lambda: store.show(777), lambda: store.end_branch_at(777)):
        with pytest.raises(UnknownMessage, match="777"):
            call()
    assert store.list_conversations() == []


def test_closed_store_and_directory_path(store, tmp_path):
    store.close()
    with pytest.raises(StoreError):
        store.list_conversations()
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)
