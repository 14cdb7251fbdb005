"""The SQLite conversation store: schema, CRUD, search, bad input, locking, crashes, concurrency."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import store_writer

from moviechat_tui.core import store as store_module
from moviechat_tui.core.store import (
    CorruptDatabase,
    DatabaseLocked,
    NewerSchemaError,
    Store,
    StoreError,
    UnknownConversation,
    UnknownMessage,
)

WRITER = Path(__file__).with_name("store_writer.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "nested" / "dir" / "conversations.db"


@pytest.fixture
def store(db_path):
    with Store(db_path) as store:
        yield store


def chat(store, *texts, title="chat"):
    """A conversation whose messages alternate user/bot."""
    conversation = store.create_conversation(title)
    for i, text in enumerate(texts):
        store.add_message(conversation.id, "user" if i % 2 == 0 else "bot", text)
    return conversation


def writer(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(WRITER), *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, **popen)


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


# --- files we must not touch ------------------------------------------------------------------


def test_newer_schema_is_refused_untouched(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:  # rollback-journal mode, so switching to WAL would show
        conn.execute("create table conversations (id integer primary key, future_column text)")
        conn.execute(f"PRAGMA user_version = {Store.SCHEMA_VERSION + 1:d}")
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(NewerSchemaError, match="newer moviechat"):
        Store(db_path)
    assert db_path.read_bytes() == before


def _foreign_sqlite(path):
    with sqlite3.connect(path) as conn:
        conn.execute("create table notes (body text)")
        conn.execute("insert into notes values ('mine')")
    conn.close()


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(os.urandom(8192)),
    lambda p: p.write_text("a text file, not a database\n"),
    lambda p: p.write_bytes(b"x"),  # SQLite alone would take this for an empty database
    _foreign_sqlite,
])
def test_not_our_database_is_refused_untouched(tmp_path, make):
    path = tmp_path / "conversations.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(CorruptDatabase, match=str(path)):
        Store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conversations.db"]


def test_damaged_database_raises_corrupt(db_path):
    with Store(db_path) as store:
        chat(store, *["line"] * 50)
    data = db_path.read_bytes()
    db_path.write_bytes(data[:100] + bytes(b ^ 0x5A for b in data[100:]))  # keep only the header
    with pytest.raises(CorruptDatabase):
        with Store(db_path) as store:
            store.list_conversations()


# --- migrations -------------------------------------------------------------------------------


def test_version_zero_file_is_migrated(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:  # a real, empty, version-0 database file
        conn.execute("create table scratch (x)")
        conn.execute("drop table scratch")
    conn.close()
    assert db_path.stat().st_size > 0
    with Store(db_path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION
        assert chat(store, "works").message_count == 0 and store.search("works")


def test_adding_a_migration_upgrades_in_place_or_not_at_all(db_path, monkeypatch):
    with Store(db_path) as store:
        conversation = chat(store, "keep me")

    def add_tags(db):
        db["tags"].create({"conversation_id": int, "tag": str})

    def broken(db):
        db["half_done"].create({"x": int})
        raise RuntimeError("migration bug")

    shipped = store_module.MIGRATIONS
    monkeypatch.setattr(Store, "SCHEMA_VERSION", len(shipped) + 1)
    monkeypatch.setattr(store_module, "MIGRATIONS", [*shipped, broken])
    with pytest.raises(RuntimeError):
        Store(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(shipped)
        assert conn.execute("select count(*) from sqlite_master where name = 'half_done'").fetchone()[0] == 0
    conn.close()

    monkeypatch.setattr(store_module, "MIGRATIONS", [*shipped, add_tags])
    with Store(db_path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(shipped) + 1
        assert store.db["tags"].exists()
        assert [m.text for m in store.messages(conversation.id)] == ["keep me"]


# --- locking, threads, processes --------------------------------------------------------------


def _hold_write_lock(path):
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_locked_beyond_busy_timeout_raises(db_path):
    with Store(db_path) as setup:
        conversation = chat(setup, "hello")
    other = _hold_write_lock(db_path)
    try:
        with Store(db_path, busy_timeout=0.2) as store:
            for write in (lambda: store.add_message(conversation.id, "user", "hi"),
                          lambda: store.create_conversation("x"),
                          lambda: store.update_message(1, text="x")):
                with pytest.raises(DatabaseLocked, match="locked"):
                    write()
            assert [m.text for m in store.messages(conversation.id)] == ["hello"]  # WAL: reads go on
            other.execute("ROLLBACK")
            store.add_message(conversation.id, "user", "now it works")
            assert len(store.messages(conversation.id)) == 2
    finally:
        other.close()


def test_opening_a_new_file_while_locked_raises(tmp_path):
    path = tmp_path / "new.db"
    other = _hold_write_lock(path)
    try:
        with pytest.raises(DatabaseLocked):
            Store(path, busy_timeout=0.2)
    finally:
        other.close()


def test_waits_for_a_lock_released_within_the_timeout(db_path):
    with Store(db_path, busy_timeout=10) as store:
        conversation = store.create_conversation()
        other = _hold_write_lock(db_path)
        released = threading.Event()

        def release():
            other.execute("COMMIT")
            released.set()

        timer = threading.Timer(0.3, release)
        timer.start()
        message = store.add_message(conversation.id, "user", "patience")
        assert released.is_set()  # the write only went through once the other writer let go
        timer.join()
        other.close()
        assert store.messages(conversation.id) == [message]


def test_reads_never_wait_for_a_write_queued_behind_another_programs_lock(db_path):
    with Store(db_path, busy_timeout=30) as store:
        conversation = chat(store, "hello")
        other = _hold_write_lock(db_path)
        writer = threading.Thread(target=lambda: store.add_message(conversation.id, "user", "queued"))
        writer.start()
        try:
            time.sleep(0.1)  # the writer now waits for the lock, holding the store's write side
            # the reading side goes on meanwhile (the old single connection froze here for 30 s)
            assert [c.id for c in store.list_conversations()] == [conversation.id]
            assert [m.text for m in store.messages(conversation.id)] == ["hello"]
            assert writer.is_alive()
        finally:
            other.execute("COMMIT")
            writer.join()
            other.close()
        assert [m.text for m in store.messages(conversation.id)] == ["hello", "queued"]


def test_on_busy_is_told_and_the_write_tried_again_until_it_goes_through(db_path):
    with Store(db_path, busy_timeout=0.05) as store:
        conversation = chat(store, "hello")
        message = store.add_message(conversation.id, "bot", "", status="partial")
        other, calls = _hold_write_lock(db_path), []

        def on_busy(error):
            assert isinstance(error, DatabaseLocked)
            calls.append(error)
            if len(calls) == 3:
                other.execute("ROLLBACK")  # the other program lets go

        store.on_busy = on_busy
        try:
            added = store.add_message(conversation.id, "user", "retried")
            assert len(calls) == 3
            other.execute("BEGIN IMMEDIATE")
            calls.clear()
            store.update_message(message.id, text="also retried", status="complete")  # a lone UPDATE
        finally:
            other.close()
        assert len(calls) == 3
        assert [(m.text, m.position) for m in store.messages(conversation.id)] == [
            ("hello", 0), ("also retried", 1), ("retried", 2)]  # each saved once
        assert added.position == 2


def test_on_busy_gives_up_by_raising_and_nothing_is_half_done(db_path):
    with Store(db_path, busy_timeout=0.05) as store:
        conversation = chat(store, "hello")
        other = _hold_write_lock(db_path)

        def give_up(error):
            raise error

        store.on_busy = give_up
        try:
            with pytest.raises(DatabaseLocked, match="locked"):
                store.rename_conversation(conversation.id, "new name")
        finally:
            other.close()
        assert store.get_conversation(conversation.id).title == "chat"
        store.rename_conversation(conversation.id, "new name")  # usable as soon as the lock is gone
        assert store.get_conversation(conversation.id).title == "new name"


def test_threads_share_one_store(store):
    conversation = store.create_conversation()

    def add(n):
        for i in range(25):
            store.add_message(conversation.id, "user", f"thread {n} message {i}")
            store.list_conversations()

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = store.messages(conversation.id)
    assert [m.position for m in messages] == list(range(100))
    assert len({m.text for m in messages}) == 100


def test_kill_9_mid_reply_keeps_what_was_written(db_path):
    db_path.parent.mkdir(parents=True)
    process = writer("stream", db_path)
    try:
        conversation_id, reply_id = map(int, process.stdout.readline().split())
        time.sleep(0.05)  # let it stream some more
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with Store(db_path) as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        user, reply = store.messages(conversation_id)
        assert (user.role, user.text, user.status) == ("user", "tell me a story", "complete")
        assert (reply.id, reply.role, reply.status) == (reply_id, "bot", "partial")
        assert reply.token_count >= 5
        # text and token_count were written by one statement, so they agree
        assert reply.text == "".join(f" word{i}" for i in range(1, reply.token_count + 1))


def test_many_processes_open_a_missing_database_at_once(tmp_path):
    # 8 processes race to create the schema (and to switch the new file to WAL) on each of 20 new
    # files. forkserver: fresh processes, each started in milliseconds with the store preloaded.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["moviechat_tui.core.store", "store_writer"])
    processes, n = 8, 6
    for round_ in range(20):
        db = tmp_path / f"round{round_}" / "conversations.db"
        start = context.Barrier(processes)
        workers = [context.Process(target=store_writer.open_and_write, args=(str(db), f"writer {k}", n, start))
                   for k in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0] * processes, f"round {round_}"
        with Store(db) as store:
            conversations = store.list_conversations()
            assert sorted(c.title for c in conversations) == [f"writer {k}" for k in range(processes)]
            for conversation in conversations:
                messages = store.messages(conversation.id)
                assert [m.position for m in messages] == list(range(n))
                assert [m.text for m in messages] == [f"message {i}" for i in range(n)]
            assert store.db.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION
            assert store.db.journal_mode == "wal"


def test_two_processes_write_at_once(db_path):
    db_path.parent.mkdir(parents=True)  # no database yet: both race to create the schema too
    n = 150
    processes = [writer("bulk", db_path, n, stdin=subprocess.PIPE) for _ in range(2)]
    try:
        ids = [int(p.stdout.readline()) for p in processes]
        for p in processes:
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [0, 0]
    assert all(out.strip() == "done" for out in outputs)
    with Store(db_path) as store:
        for conversation_id in ids:
            messages = store.messages(conversation_id)
            assert [m.position for m in messages] == list(range(n))
            assert [m.text for m in messages] == [f"message {i}" for i in range(n)]
