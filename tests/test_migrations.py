"""Schema upgrades: a database made by schema version 1 (the first release) opens as the current
version, in place, in one transaction, with every message, id and search hit kept."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from moviechat_tui.core import schema
from moviechat_tui.core import store as store_module
from moviechat_tui.core.store import Store

# Exactly what version 1 created (frozen here: the shipped code may change, old files don't).
V1_DDL = [
    """CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        model_spec TEXT NOT NULL DEFAULT '',
        settings TEXT NOT NULL DEFAULT '{}',
        conditioning TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'complete',
        model TEXT,
        token_count INTEGER,
        latency_ms REAL,
        settings TEXT NOT NULL DEFAULT '{}',
        UNIQUE (conversation_id, position)
    )""",
]

CONVERSATIONS = [  # id, title, conditioning, messages (role, text, status)
    (1, "Casablanca", '{"character": "Rick", "genres": ["drama"]}',
     [("user", "Of all the gin joints?", "complete"), ("bot", "In all the towns.", "complete"),
      ("user", "Play it again.", "complete"), ("bot", "I was about to", "cancelled")]),
    (2, "", "{}", [("user", "emoji 🎬 and שלום", "complete")]),
    (3, "empty", "{}", []),
]


def make_v1_database(path):
    """A version-1 file with three conversations; the last message ever written (id 9) was deleted,
    so AUTOINCREMENT's counter is ahead of the largest id."""
    db = sqlite_utils.Database(path)
    for ddl in V1_DDL:
        db.execute(ddl)
    db["conversations"].create_index(["updated_at"])
    db["messages"].enable_fts(["text"], create_triggers=True)
    message_id = 0
    for conversation_id, title, conditioning, messages in CONVERSATIONS:
        db.execute("insert into conversations values (?, ?, '2026-01-01T00:00:00.000Z',"
                   " '2026-01-02T00:00:00.000Z', 'default', '{\"seed\": 7}', ?)", [conversation_id, title, conditioning])
        for position, (role, text, status) in enumerate(messages):
            message_id += 1
            db.execute("insert into messages values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [message_id, conversation_id, position, role, text, f"2026-01-01T00:00:0{position}.000Z",
                        status, "default" if role == "bot" else None, 4 if role == "bot" else None,
                        12.5 if role == "bot" else None, '{"temperature": 0.7}' if role == "bot" else "{}"])
    db.execute("insert into messages (id, conversation_id, position, role, text, created_at)"
               " values (9, 2, 1, 'bot', 'deleted soon', '2026-01-01T00:00:01.000Z')")
    db.execute("delete from messages where id = 9")
    db.execute("PRAGMA user_version = 1")
    db.conn.commit()
    db.close()


def dump(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        lines = list(conn.iterdump())
    conn.close()
    return lines


def test_a_version_1_database_upgrades_in_place_with_nothing_lost(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_database(path)
    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION == 2
        casablanca = store.get_conversation(1)
        assert (casablanca.title, casablanca.conditioning, casablanca.settings, casablanca.message_count,
                casablanca.updated_at) == ("Casablanca", {"character": "Rick", "genres": ["drama"]}, {"seed": 7}, 4,
                                           "2026-01-02T00:00:00.000Z")
        messages = store.messages(1)
        assert [(m.id, m.role, m.text, m.status) for m in messages] == [
            (1, "user", "Of all the gin joints?", "complete"), (2, "bot", "In all the towns.", "complete"),
            (3, "user", "Play it again.", "complete"), (4, "bot", "I was about to", "cancelled")]
        assert [(m.parent_id, m.position, m.alternatives) for m in messages] == [
            (None, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]
        bot = messages[1]
        assert (bot.model, bot.token_count, bot.latency_ms, bot.settings, bot.created_at, bot.rating) == (
            "default", 4, 12.5, {"temperature": 0.7}, "2026-01-01T00:00:01.000Z", None)
        assert [m.text for m in store.messages(2)] == ["emoji 🎬 and שלום"]
        assert store.messages(3) == []
        # the search index came along, and its triggers follow new writes
        assert [m.id for _, m in store.search("gin joints")] == [1]
        assert [m.id for _, m in store.search("שלום")] == [5]
        store.update_message(2, text="In all the saloons.")
        assert store.search("towns") == [] and [m.id for _, m in store.search("saloons")] == [2]
        # the conversation goes on after its last message; a deleted message's id is never reused
        added = store.add_message(1, "user", "Again?")
        assert (added.parent_id, added.position, added.id) == (4, 4, 10)
        assert store.add_message(3, "user", "First words.").parent_id is None
        store.delete_conversation(1)  # the tree cascades
        assert store.db.execute("select count(*) from messages where conversation_id = 1").fetchone()[0] == 0
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failed_upgrade_leaves_the_version_1_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "v1.db"
    make_v1_database(path)
    before = dump(path)

    def upgrade_then_fail(db):
        schema.add_branches_and_ratings(db)  # everything done, then a crash before the commit
        raise RuntimeError("power cut")

    monkeypatch.setattr(store_module, "MIGRATIONS", [schema.create_v1, upgrade_then_fail])
    with pytest.raises(RuntimeError, match="power cut"):
        Store(path)
    assert dump(path) == before
    monkeypatch.undo()
    with Store(path) as store:  # and the real upgrade still works afterwards
        assert len(store.messages(1)) == 4


def test_a_new_database_and_an_upgraded_one_have_the_same_schema(tmp_path):
    make_v1_database(tmp_path / "old.db")
    Store(tmp_path / "old.db").close()
    Store(tmp_path / "new.db").close()

    def tables(path):
        db = sqlite_utils.Database(path)
        tables = {t.name: (t.columns_dict, sorted((fk.column, fk.other_table, fk.other_column, fk.on_delete)
                                                  for fk in t.foreign_keys),
                           sorted(tuple(i.columns) for i in t.indexes)) for t in db.tables}
        return tables, sorted(t.name for t in db.triggers)

    assert tables(tmp_path / "old.db") == tables(tmp_path / "new.db")
