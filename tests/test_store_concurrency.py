"""The conversation store under contention: locks held by other programs, threads sharing a Store,
processes racing to create and write one file, and kill -9 mid-reply."""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import store_writer
from store_helpers import chat, db_path, store, writer  # noqa: F401 (pytest fixtures)

from moviechat_tui.core.store import DatabaseLocked, Store


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
