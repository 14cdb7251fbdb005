"""Leave when the terminal goes away.

A terminal that closes normally sends SIGHUP to its foreground programs. Not always: under `make run`
make is the terminal's session leader, blocks SIGHUP while it waits for its child, and the app never
gets one; its terminal then reads as end-of-file forever, and Textual's input thread spins on it
(~40 % of a core, found after `tmux kill-server`). So the app watches for both: SIGHUP, and the
hang-up that poll() reports on a terminal whose other end has closed.

Textual writes the screen from a thread of its own, and a write to a hung-up terminal fails (EIO):
the thread died of it, its queue of 30 writes filled, and the app's next redraw blocked the event
loop for good, before the check above could run (found as a CI failure, reproduced with a slower
check). So the app's driver writes through `TerminalOutput`, which drops what a gone terminal can't
take and lets the app quit as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
from typing import Any, Callable, TextIO

CHECK_SECONDS = 1.0  # how often the app looks at its terminal


def terminal_fd() -> int | None:
    """The file descriptor the app reads its keys from, if it is a terminal."""
    stream = sys.__stdin__
    try:
        fd = stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        return None
    return fd if fd is not None and os.isatty(fd) else None


def hung_up(fd: int) -> bool:
    """True once the terminal on `fd` has lost its other end (reads nothing, doesn't consume input)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0))


class TerminalOutput:
    """The driver's output stream, less its errors: once the terminal is gone, writes go nowhere."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:  # EIO once the terminal hangs up (the hang-up check then ends the app)
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding: the terminal's own
        return getattr(self._stream, name)


def driver_class(default: type) -> type:
    """Textual's terminal driver, writing through TerminalOutput; any other driver as it is."""
    if sys.platform == "win32":
        return default
    from textual.drivers.linux_driver import LinuxDriver

    if default is not LinuxDriver:  # headless, web, or one named in TEXTUAL_DRIVER
        return default

    class HangUpSafeDriver(LinuxDriver):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._file = TerminalOutput(self._file)  # what LinuxDriver's writer thread writes to

    return HangUpSafeDriver


def watch_terminal(app, on_gone: Callable[[], None]) -> Callable[[], None]:
    """Call `on_gone` (on the app's event loop) when the terminal hangs up; returns the undo."""
    fd = terminal_fd()
    if fd is None or app.is_headless:
        return lambda: None
    gone = False

    def check() -> None:
        nonlocal gone
        if not gone and hung_up(fd):
            gone = True
            on_gone()

    timer = app.set_interval(CHECK_SECONDS, check)
    loop = asyncio.get_running_loop()  # called from the app's handlers, on its loop
    try:
        loop.add_signal_handler(signal.SIGHUP, on_gone)
        handled = True
    except (NotImplementedError, RuntimeError, ValueError):  # not on the main thread
        handled = False

    def undo() -> None:
        timer.stop()
        if handled:
            loop.remove_signal_handler(signal.SIGHUP)

    return undo
