"""Database writes off the TUI's event loop, and what the app says while another program holds the
database.

The app never writes on its event loop: a reply writes on its worker, a rename, a delete or new
settings on a worker of their own (`write_in_background`). A write that finds the database locked
for the store's busy timeout calls `store.on_busy`; `RetryWhileBusy` shows "database busy, retrying"
and lets it try again, so the turn being saved is kept, until the database is free, the user stops
the reply, or the app quits. Reads never wait for writes (the store reads on its own connection).
"""

from __future__ import annotations

import threading
from typing import Callable

from textual.app import App
from textual.message import Message
from textual.worker import NoActiveWorker, Worker, get_current_worker

from ..core.engine import EngineError
from ..core.store import DatabaseLocked, Store, StoreError

BUSY_SECONDS = 2.0  # the TUI's store waits this long for a lock before saying so and trying again
BUSY_NOTICE = "database busy, retrying: another program is writing to it"


class DatabaseBusy(Message):
    """Posted from a worker whose write waits for the database."""


class Written(Message):
    """A background write finished: `done(result)` runs on the event loop, or `error` is shown."""

    def __init__(self, done: Callable[[object], None] | None, result: object, error: str | None) -> None:
        super().__init__()
        self.done, self.result, self.error = done, result, error


class RetryWhileBusy:
    """`store.on_busy` for an app: say the database is busy and let the write try again."""

    def __init__(self, app: App, store: Store, give_up: Callable[[Worker], bool]) -> None:
        self.app, self.store, self.give_up = app, store, give_up
        self.loop_thread = threading.get_ident()  # installed from the event loop
        self.previous, store.on_busy = store.on_busy, self
        self.previous_timeout = store.busy_timeout
        store.set_busy_timeout(min(BUSY_SECONDS, store.busy_timeout))  # say so soon, then keep trying

    def __call__(self, error: DatabaseLocked) -> None:
        if threading.get_ident() == self.loop_thread:
            raise error  # never wait on the event loop (no write should run there)
        try:
            worker = get_current_worker()
        except NoActiveWorker:
            worker = None
        if worker is not None and (worker.is_cancelled or self.give_up(worker)):
            raise error  # the app is quitting, or the user stopped the reply
        self.app.post_message(DatabaseBusy())

    def uninstall(self) -> None:
        if self.store.on_busy is self:
            self.store.on_busy = self.previous
            self.store.set_busy_timeout(self.previous_timeout)


def write_in_background(app: App, write: Callable[[], object], done: Callable[[object], None] | None = None) -> None:
    """Run `write` (a store write through the engine) on a thread worker; then `done(result)` on the
    event loop, or the error as a notification."""

    def run() -> None:
        try:
            result, error = write(), None
        except (EngineError, StoreError, ValueError) as exc:
            result, error = None, str(exc)
        app.post_message(Written(done, result, error))

    app.run_worker(run, group="store", thread=True, exit_on_error=False)
