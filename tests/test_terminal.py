"""The TUI leaves when its terminal goes away: run as a user runs it, on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from moviechat_tui.core.store import Store
from moviechat_tui.tui.terminal import TerminalOutput, hung_up


def test_hung_up_reports_a_closed_terminal_without_reading_its_input():
    master, slave = os.openpty()
    try:
        os.write(master, b"typed\n")
        assert not hung_up(slave)
        os.close(master)
        assert hung_up(slave)
    finally:
        os.close(slave)
    master, slave = os.openpty()
    try:
        os.write(master, b"kept\n")
        assert not hung_up(slave) and not hung_up(slave)
        assert os.read(slave, 100) == b"kept\n"  # the check consumed nothing
    finally:
        os.close(master), os.close(slave)


def test_the_output_outlives_its_terminal():
    master, slave = os.openpty()
    output = TerminalOutput(open(slave, "w", closefd=True))
    try:
        assert output.fileno() == slave and output.isatty()  # the rest is the terminal's own
        output.write("shown"), output.flush()
        assert os.read(master, 100) == b"shown"
        os.close(master)
        assert output.write("lost") == 4  # the terminal is gone: no error, nothing shown
        output.flush()
    finally:
        with contextlib.suppress(OSError):  # its last flush fails: the terminal is gone
            output.close()


# Slower than the app's own check (1 s): between the terminal's close and its discovery the app keeps
# redrawing (a blinking cursor is ~2 writes a second), and Textual's writer thread died of the first
# failed write, its 30-write queue filled, and the app hung. 20 s of redraws made that certain.
CHECK_SECONDS = 20.0


class TuiOnATerminal:
    """moviechat-tui on a pseudo-terminal of its own and no controlling terminal: so nothing sends it
    SIGHUP when the terminal closes (as under `make run`, whose make blocks SIGHUP)."""

    def __init__(self, model_dir, db):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        env = dict(os.environ, TERM="xterm-256color")
        launch = ("import sys, moviechat_tui.tui.terminal as t; t.CHECK_SECONDS = float(sys.argv[1]); "
                  "from moviechat_tui.cli import main; sys.exit(main(sys.argv[2:]))")
        self.process = subprocess.Popen(
            [sys.executable, "-c", launch, str(CHECK_SECONDS), "--model", str(model_dir), "--db", str(db)],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.screen = bytearray()
        self._closing = threading.Event()
        self._drainer = threading.Thread(target=self._drain, daemon=True)  # a full pty blocks the app
        self._drainer.start()

    def _drain(self) -> None:
        # Never blocked in read(): a read in progress would hold the terminal open past close().
        while not self._closing.is_set():
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                self.screen += data

    def wait_for(self, condition, what: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert self.process.poll() is None, f"the app ended early: {bytes(self.screen[-2000:])!r}"
            assert time.monotonic() < deadline, f"no {what} after {seconds} s"
            time.sleep(0.1)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close_terminal(self) -> None:
        self._closing.set()
        self._drainer.join()
        os.close(self.master)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def tui(tiny_gpt2_dir, tmp_path):
    db = tmp_path / "chat.db"
    app = TuiOnATerminal(tiny_gpt2_dir, db)
    yield app, db
    app.kill()
    if not app._closing.is_set():
        app.close_terminal()


def _chat_once(app, db) -> None:
    app.wait_for(lambda: b"conversation" in app.screen, "screen")
    app.type("Hello there\r")
    app.wait_for(lambda: [m.role for m in _saved(db)] == ["user", "bot"], "saved reply")


def _saved(db) -> list:
    """The messages of the one saved conversation (none yet: [])."""
    store = Store(db)
    try:
        conversations = store.list_conversations()
        return store.messages(conversations[0].id) if conversations else []
    finally:
        store.close()


def test_the_app_exits_when_its_terminal_closes_and_keeps_the_conversation(tui):
    app, db = tui
    _chat_once(app, db)
    app.close_terminal()
    try:
        app.process.wait(timeout=CHECK_SECONDS + 40)
    except subprocess.TimeoutExpired:
        pytest.fail("the app kept running after its terminal closed")
    assert [m.text for m in _saved(db)][0] == "Hello there"


def test_sighup_ends_the_app_as_quitting_does(tui):
    app, db = tui
    _chat_once(app, db)
    app.process.send_signal(signal.SIGHUP)
    assert app.process.wait(timeout=30) == 0  # quit by the app, not killed by the signal (-1)
    assert [m.role for m in _saved(db)] == ["user", "bot"]
