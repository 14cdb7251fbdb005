"""Leave when the terminal goes away.

A terminal that closes normally sends SIGHUP to its foreground programs. Not always: under `make run`
make is the terminal's session leader, blocks SIGHUP while it waits for its child, and the app never
gets one; its terminal then reads as end-of-file forever, and Textual's input thread spins on it
(~40 % of a core, found after `tmux kill-server`). So the app watches for both: SIGHUP, and the
hang-up that poll() reports on a terminal whose other end has closed.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
from typing import Callable

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
