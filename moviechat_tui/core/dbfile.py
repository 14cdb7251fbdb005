"""The SQLite file under the conversation store: what to check before touching it, switching it to
WAL while other processes open it too, and sqlite3's errors as one-line messages for the user."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class StoreError(Exception):
    """A problem with the conversation database, as a one-line message for the user."""


class UnknownConversation(StoreError): ...
class UnknownMessage(StoreError): ...
class NewerSchemaError(StoreError): ...  # written by a newer moviechat: left untouched
class CorruptDatabase(StoreError): ...  # not SQLite, damaged, or another program's database: left untouched
class DatabaseLocked(StoreError): ...  # another program held the write lock beyond the busy timeout
class ReadOnlyDatabase(StoreError): ...  # the file or its directory cannot be written: nothing changed


def refuse_non_sqlite_file(path: Path) -> None:
    """SQLite would treat some short files as empty databases and overwrite them: check first."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StoreError(f"cannot open {path}: {error.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise CorruptDatabase(f"{path} is not a SQLite database; refusing to touch it")


def is_busy(error: sqlite3.Error) -> bool:
    return (getattr(error, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """PRAGMA journal_mode=WAL, retried for up to `timeout` seconds.

    The switch needs the file to itself for a moment, and SQLite answers SQLITE_BUSY at once, without
    calling the busy handler, when another connection holds a lock on it (e.g. several processes
    opening a new database together). It cannot run inside a transaction, so we retry it here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.002, 0.02))  # jitter: the processes do not retry in step
            continue
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal mode stays {mode})")
        return


def store_error(error: sqlite3.Error, path: Path, busy_timeout: float) -> StoreError:
    """A sqlite3 exception as the StoreError to show the user, in one line."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if is_busy(error):
        return DatabaseLocked(f"{path} is locked by another program (gave up after {busy_timeout:g} s)")
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return CorruptDatabase(f"{path} is damaged or not a database: {error}")
    if name.startswith("SQLITE_READONLY") or (name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM"))
                                              and not _writable(path)):
        return ReadOnlyDatabase(f"cannot write {path}: {_read_only_reason(path)}; nothing was changed")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(f"cannot open {path}: {error}")
    return StoreError(f"{path}: {error}")


def _writable(path: Path) -> bool:
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _read_only_reason(path: Path) -> str:
    if not os.access(path.parent, os.W_OK):
        return f"its directory {path.parent} is read-only (SQLite keeps its journal files there)"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    return "the file or its directory cannot be written (check the permissions and free space)"
