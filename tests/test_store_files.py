"""The conversation store and files it must not touch (a newer schema, not a moviechat database, a
damaged one), and migrating old ones in place or not at all."""

from __future__ import annotations

import os
import sqlite3

import pytest
from store_helpers import chat, db_path  # noqa: F401 (pytest fixtures)

from moviechat_tui.core import store as store_module
from moviechat_tui.core.store import CorruptDatabase, NewerSchemaError, Store


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
