"""The conversation store: one SQLite file (via sqlite-utils) shared by the TUI and the web page.

Durability: every write commits at once (WAL, synchronous=NORMAL), so a crash or kill -9 of the
writer mid-reply keeps everything written so far. Concurrency: a write connection and a read-only
one, each behind its own lock, make a Store safe to share between threads, and reads never wait for
writes; multi-statement writes take the write lock up front (BEGIN IMMEDIATE) so that several
processes on one file queue up for up to `busy_timeout` seconds instead of deadlocking, and then
raise DatabaseLocked or, with `on_busy` set, report it and try again. The schema version lives in
`PRAGMA user_version`; see schema.py. Creating or migrating the schema happens in one BEGIN IMMEDIATE
transaction that reads the version again, so any number of processes may open a missing file at once
(tests/test_store_concurrency.py starts 8).

A conversation is a tree of messages; what is read and written by default is the branch on screen
(see branches.py). `transaction(change)` runs several writes (an import, a fork) as one.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

import sqlite_utils

from .dbfile import (  # noqa: F401  (the errors are part of the store's API)
    CorruptDatabase,
    DatabaseLocked,
    NewerSchemaError,
    ReadOnlyDatabase,
    StoreError,
    UnknownConversation,
    UnknownMessage,
    refuse_non_sqlite_file,
    store_error,
    switch_to_wal,
)
from .branches import BranchQueries
from .dialogue import ROLES
from .records import (  # noqa: F401  (the records are part of the store's API)
    MESSAGE_COLUMNS,
    MESSAGE_STATUSES,
    RATINGS,
    Conversation,
    Message,
    check_rating,
    check_status,
    check_text,
    clean_title,
    conversation_from,
    fts_query,
    message_from,
    to_json,
    utc_now,
)
from .schema import MIGRATIONS

T = TypeVar("T")
SHOWN_LEAF = object()  # add_message's default parent: the last message of the branch on screen
UNCHANGED = object()  # rate_message: leave this part of the rating as it is

_CONVERSATIONS = ("select c.*, (select count(*) from messages m where m.conversation_id = c.id)"
                  " as message_count from conversations c")


class Store(BranchQueries):
    """Writes go through one connection behind an RLock, reads through a second (query_only) one behind
    their own lock: in WAL mode a read never waits for a write, even one queued behind another
    program's lock. Set `on_busy` to have a write that found the file locked for `busy_timeout` call
    it and try again (it raises to give up); without it DatabaseLocked is raised. Reads made inside a
    write (by the thread that writes) go through the write connection, so they see what it wrote."""

    SCHEMA_VERSION = len(MIGRATIONS)

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0):
        self.path = Path(path).expanduser()
        self.busy_timeout = busy_timeout
        self.on_busy: Callable[[DatabaseLocked], None] | None = None
        self._lock, self._read_lock = threading.RLock(), threading.RLock()
        self._writer_thread: int | None = None  # the thread inside _write's transaction, if any
        refuse_non_sqlite_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the directory {self.path.parent}: {error.strerror}") from None
        with self._errors():
            self._conn = self._connect()
        self.db = sqlite_utils.Database(self._conn, execute_plugins=False)
        try:
            self._open()
            with self._errors():
                self._reader = self._connect()
                self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._conn.close()
            raise
        self._rdb = sqlite_utils.Database(self._reader, execute_plugins=False)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: sqlite3 opens no hidden transactions; we BEGIN where we mean to.
        return sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)

    def _open(self) -> None:
        """Check the file, switch it to WAL, create or migrate the schema: safe when any number of
        processes open the same (possibly missing) file at once."""
        with self._errors():
            # Connection settings only: nothing is written to the file before the checks.
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("BEGIN")  # version and tables read from one snapshot
            try:
                version = self._check_ours()
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # it only read
            switch_to_wal(self._conn, self.busy_timeout)  # not allowed inside a transaction
        if version < self.SCHEMA_VERSION:
            self._write(self._migrate)

    def _check_ours(self) -> int:
        """The file's schema version; refuses a newer moviechat's file or another program's."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > self.SCHEMA_VERSION:
            raise NewerSchemaError(
                f"{self.path} was written by a newer moviechat (schema version {version}, this one"
                f" reads up to {self.SCHEMA_VERSION}); upgrade moviechat or use another --db")
        if version == 0 and self.db.table_names():
            raise CorruptDatabase(f"{self.path} is a SQLite database but not a moviechat one;"
                                  " refusing to touch it")
        return version

    def _migrate(self) -> None:
        version = self._check_ours()  # again, under the write lock: another process may have won
        for migrate in MIGRATIONS[version:self.SCHEMA_VERSION]:
            migrate(self.db)
        self._conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION:d}")

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another program's lock before raising or calling on_busy."""
        with self._lock, self._errors():
            self._conn.execute(f"PRAGMA busy_timeout = {round(seconds * 1000):d}")
        self.busy_timeout = seconds

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            if hasattr(self, "_reader"):
                self._reader.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _errors(self):
        """sqlite3's exceptions as StoreErrors with one-line messages."""
        try:
            yield
        except sqlite3.Error as error:
            raise store_error(error, self.path, self.busy_timeout) from error

    @contextmanager
    def _read(self):
        """The database to read from: the read connection, or the write connection for the thread
        that is inside a write (so it sees what that write has done so far)."""
        if self._writer_thread == threading.get_ident():
            with self._errors():
                yield self.db
            return
        with self._read_lock, self._errors():
            yield self._rdb

    def _write(self, change: Callable[[], T], *, transaction: bool = True) -> T:
        """`change()` in one transaction that holds the write lock from its start (BEGIN IMMEDIATE),
        committed on return (transaction=False: one lone statement, its own transaction). A change
        that found the file locked is rolled back, so trying it again after `on_busy` is safe. Inside
        this thread's open transaction, the change is part of that one (see `transaction`)."""
        if self._writer_thread == threading.get_ident():
            with self._errors():
                return change()
        while True:
            try:
                with self._lock, self._errors():
                    if not transaction:
                        return change()
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._writer_thread = threading.get_ident()
                    try:
                        result = change()
                        self._conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise
                    finally:
                        self._writer_thread = None
            except DatabaseLocked as locked:
                if self.on_busy is None:
                    raise
                self.on_busy(locked)  # e.g. tells the user "database busy, retrying"; raises to give up

    def transaction(self, change: Callable[[], T]) -> T:
        """`change()`, whose writes (store calls included) commit together or not at all."""
        return self._write(change)

    def _touch(self, conversation_id: int, when: str | None = None) -> None:
        """Bump updated_at; UnknownConversation if there is no such conversation."""
        cursor = self._conn.execute("update conversations set updated_at = ? where id = ?",
                                    [when or utc_now(), conversation_id])
        if cursor.rowcount == 0:
            raise UnknownConversation(f"no conversation with id {conversation_id}")

    # --- conversations ------------------------------------------------------------------------

    def create_conversation(self, title: str = "", *, model_spec: str = "", settings: dict | None = None,
                            conditioning: dict | None = None, created_at: str | None = None) -> Conversation:
        now = utc_now()
        row = {"title": clean_title(title), "created_at": created_at or now, "updated_at": now,
               "model_spec": model_spec,
               "settings": to_json(settings, "settings"), "conditioning": to_json(conditioning, "conditioning")}
        conversation_id = self._write(lambda: self.db["conversations"].insert(row).last_pk)
        return conversation_from({"id": conversation_id, **row})

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._read() as db:
            rows = list(db.query(_CONVERSATIONS + " where c.id = ?", [conversation_id]))
        if not rows:
            raise UnknownConversation(f"no conversation with id {conversation_id}")
        return conversation_from(rows[0])

    def list_conversations(self, query: str | None = None, limit: int | None = None) -> list[Conversation]:
        """Newest first; `query` matches a title substring or words in any message."""
        sql, params = _CONVERSATIONS, []
        query = (query or "").replace("\x00", "").strip()  # LIKE would stop reading at a NUL
        if query:
            like = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql += " where c.title like ? escape '\\'"
            params.append(f"%{like}%")
            if words := fts_query(query):
                sql += (" or c.id in (select m.conversation_id from messages_fts"
                        " join messages m on m.id = messages_fts.rowid where messages_fts match ?)")
                params.append(words)
        sql += " order by c.updated_at desc, c.id desc"
        if limit is not None:
            sql += " limit ?"
            params.append(limit)
        with self._read() as db:
            return [conversation_from(row) for row in db.query(sql, params)]

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        title = clean_title(title)

        def rename() -> None:
            self._touch(conversation_id)
            self.db["conversations"].update(conversation_id, {"title": title})

        self._write(rename)
        return self.get_conversation(conversation_id)

    def update_conversation(self, conversation_id: int, *, model_spec: str | None = None,
                            settings: dict | None = None, conditioning: dict | None = None) -> Conversation:
        changes = {"model_spec": model_spec,
                   "settings": None if settings is None else to_json(settings, "settings"),
                   "conditioning": None if conditioning is None else to_json(conditioning, "conditioning")}
        changes = {column: value for column, value in changes.items() if value is not None}

        def update() -> None:
            self._touch(conversation_id)
            if changes:
                self.db["conversations"].update(conversation_id, changes)

        self._write(update)
        return self.get_conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        def delete() -> None:
            if self._conn.execute("delete from conversations where id = ?", [conversation_id]).rowcount == 0:
                raise UnknownConversation(f"no conversation with id {conversation_id}")

        self._write(delete)

    # --- messages -----------------------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, text: str, *, parent_id=SHOWN_LEAF,
                    status: str = "complete", model: str | None = None, token_count: int | None = None,
                    latency_ms: float | None = None, settings: dict | None = None,
                    created_at: str | None = None) -> Message:
        """Add a message after `parent_id` (by default the last message of the branch on screen; None:
        a new first message) and show it: the branch on screen now ends with it. Committed at once."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        check_status(status)
        check_text(text)
        row = {"conversation_id": conversation_id, "role": role, "text": text, "created_at": created_at,
               "status": status, "model": model, "token_count": token_count, "latency_ms": latency_ms,
               "settings": to_json(settings, "settings")}

        def add() -> int:
            now = utc_now()  # when it was saved, even after waiting for the lock
            self._touch(conversation_id, now)
            parent = self.shown_leaf_id(conversation_id) if parent_id is SHOWN_LEAF else parent_id
            position = 0
            if parent is not None:
                found = self._conn.execute("select conversation_id, position from messages where id = ?",
                                           [parent]).fetchone()
                if found is None or found[0] != conversation_id:
                    raise UnknownMessage(f"no message with id {parent} in conversation {conversation_id}")
                position = found[1] + 1
            message_id = self.db["messages"].insert(
                {**row, "created_at": created_at or now, "parent_id": parent, "position": position}).last_pk
            self._point_at(conversation_id, parent, message_id)
            return message_id

        return self.get_message(self._write(add))

    def update_message(self, message_id: int, *, text: str | None = None, status: str | None = None,
                       token_count: int | None = None, latency_ms: float | None = None) -> None:
        """Change a message in place, e.g. per streamed token: one UPDATE, committed at once."""
        if text is not None:
            check_text(text)
        if status is not None:
            check_status(status)
        changes = {"text": text, "status": status, "token_count": token_count, "latency_ms": latency_ms}
        self._update_message(message_id, {column: value for column, value in changes.items() if value is not None})

    def _update_message(self, message_id: int, changes: dict) -> None:
        if not changes:
            return
        sql = f"update messages set {', '.join(f'{column} = ?' for column in changes)} where id = ?"
        cursor = self._write(lambda: self._conn.execute(sql, [*changes.values(), message_id]), transaction=False)
        if cursor.rowcount == 0:
            raise UnknownMessage(f"no message with id {message_id}")

    def rate_message(self, message_id: int, *, rating=UNCHANGED, out_of_character=UNCHANGED,
                     rated_at: str | None = None) -> Message:
        """Set a reply's rating ("up", "down" or None) and/or its out-of-character flag."""
        changes = {}
        if rating is not UNCHANGED:
            check_rating(rating)
            changes["rating"] = rating
        if out_of_character is not UNCHANGED:
            changes["out_of_character"] = int(bool(out_of_character))
        if changes:
            self._update_message(message_id, {**changes, "rated_at": rated_at or utc_now()})
        return self.get_message(message_id)

    def rated_messages(self) -> list[Message]:
        """Every reply with a rating or an out-of-character mark, by conversation, oldest first."""
        with self._read() as db:
            rows = db.query(f"select {MESSAGE_COLUMNS} from messages m where m.rating is not null"
                            " or m.out_of_character order by m.conversation_id, m.id")
            return [message_from(row) for row in rows]

    def get_message(self, message_id: int) -> Message:
        with self._read() as db:
            rows = list(db.query(f"select {MESSAGE_COLUMNS} from messages m where m.id = ?", [message_id]))
        if not rows:
            raise UnknownMessage(f"no message with id {message_id}")
        return message_from(rows[0])

    def search(self, text: str, limit: int = 50) -> list[tuple[Conversation, Message]]:
        """Messages containing all the words of `text`, best match first, then newest."""
        query = fts_query(text or "")
        if not query:
            return []
        with self._read() as db:
            rows = list(db.query(
                f"select {MESSAGE_COLUMNS} from messages_fts join messages m on m.id = messages_fts.rowid"
                " where messages_fts match ? order by messages_fts.rank, m.created_at desc, m.id desc limit ?",
                [query, limit]))
            conversations = {cid: self.get_conversation(cid) for cid in {row["conversation_id"] for row in rows}}
        return [(conversations[row["conversation_id"]], message_from(row)) for row in rows]
