"""The conversation database's schema and its migrations (`PRAGMA user_version` = len(MIGRATIONS)).

MIGRATIONS[i] takes a database from schema version i to i + 1. The Store runs them all inside the one
BEGIN IMMEDIATE transaction that opens the file, so an upgrade happens completely or not at all. To
change the schema, append a function; never edit one that has shipped (databases in the wild were
made by it).

Version 2 makes a conversation a tree: each message has a `parent_id` (NULL for a first message), so
a regenerated reply or an edited message is a sibling of the one it replaces instead of overwriting
it. The branch on screen is kept as pointers: `conversations.shown_root_id` is the first message
shown, `messages.shown_child_id` the message shown after each one (NULL: the branch ends there).
Every fork remembers its own choice, so moving between alternatives high up keeps what was chosen
further down. Replies also get a rating.
"""

from __future__ import annotations

import sqlite_utils


def create_v1(db: sqlite_utils.Database) -> None:
    # Plain DDL for the two tables: sqlite-utils' create() has no AUTOINCREMENT, and without it SQLite
    # reuses the id of a deleted last row, so a stale window could write into somebody else's chat.
    db.execute("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            model_spec TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            conditioning TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("""
        CREATE TABLE messages (
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
        )""")
    db["conversations"].create_index(["updated_at"])
    db["messages"].enable_fts(["text"], create_triggers=True)  # FTS5, kept in sync by triggers


_V1_COLUMNS = ("id, conversation_id, role, text, created_at, status, model, token_count, latency_ms,"
               " settings")


def add_branches_and_ratings(db: sqlite_utils.Database) -> None:
    """v2: messages become a tree (parent_id, shown pointers) and replies get a rating.

    SQLite can't drop v1's UNIQUE (conversation_id, position) in place (position is now the depth,
    shared by siblings), so the table is rebuilt the documented way: new table, copy, drop, rename.
    Ids are kept (the full-text index and exported files refer to them), and so is the AUTOINCREMENT
    counter, so the id of a deleted message is never handed out again."""
    (old_seq,) = db.execute("select coalesce(max(seq), 0) from sqlite_sequence where name = 'messages'").fetchone()
    db.execute("""
        CREATE TABLE messages_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages_v2(id) ON DELETE CASCADE,
            shown_child_id INTEGER REFERENCES messages_v2(id) ON DELETE SET NULL,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'complete',
            model TEXT,
            token_count INTEGER,
            latency_ms REAL,
            settings TEXT NOT NULL DEFAULT '{}',
            rating TEXT,
            out_of_character INTEGER NOT NULL DEFAULT 0,
            rated_at TEXT
        )""")
    # A v1 conversation is one line: each message's parent is the one before it. Parents go in first
    # (the foreign key is checked row by row); the depth closes any gap a v1 file might have.
    db.execute(f"""
        INSERT INTO messages_v2 ({_V1_COLUMNS}, parent_id, position)
        SELECT {', '.join('m.' + c.strip() for c in _V1_COLUMNS.split(','))},
            (SELECT p.id FROM messages p WHERE p.conversation_id = m.conversation_id
                AND p.position < m.position ORDER BY p.position DESC LIMIT 1),
            (SELECT count(*) FROM messages p WHERE p.conversation_id = m.conversation_id
                AND p.position < m.position)
        FROM messages m ORDER BY m.conversation_id, m.position""")
    db.execute("UPDATE messages_v2 SET shown_child_id ="
               " (SELECT c.id FROM messages_v2 c WHERE c.parent_id = messages_v2.id)")
    db.execute("DROP TABLE messages")  # its full-text triggers go with it; the index is rebuilt below
    db.execute("ALTER TABLE messages_v2 RENAME TO messages")
    if old_seq:  # no row yet when nothing was copied
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'messages' AND seq < ?", [old_seq])
        db.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', ?"
                   " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages')", [old_seq])
    db["messages"].create_index(["conversation_id", "position"])
    db["messages"].create_index(["parent_id"])
    # Added after the rebuild: dropping the old table would otherwise null the new pointers.
    db.execute("ALTER TABLE conversations ADD COLUMN shown_root_id INTEGER"
               " REFERENCES messages(id) ON DELETE SET NULL")
    db.execute("UPDATE conversations SET shown_root_id = (SELECT m.id FROM messages m"
               " WHERE m.conversation_id = conversations.id AND m.parent_id IS NULL)")
    db["messages"].enable_fts(["text"], create_triggers=True, replace=True)
    problems = db.execute("PRAGMA foreign_key_check").fetchall()
    if problems:  # rolls the whole upgrade back
        raise RuntimeError(f"schema v2 upgrade left broken references: {problems[:3]}")


MIGRATIONS = [create_v1, add_branches_and_ratings]
