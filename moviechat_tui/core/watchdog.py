"""The generation watchdog: a reply whose backend stops producing tokens ends as an error.

The model's heartbeat is the time of its latest token, or of the moment a reply or a warm-up took its
generate_lock. A reply's consumer wakes every WATCH_INTERVAL while no text arrives and gives up once
the model, busy (locked), has shown no progress for `stall_seconds`: whether the model is working on
this reply or on another one that is stuck. A reply merely waiting behind a working one is no stall.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Iterator

# A reply ends as an error after this long without a new token. Generous: a long prompt's prefill on a
# busy CPU takes seconds, not a minute.
STALL_SECONDS = 60.0
WATCH_INTERVAL = 0.25  # how often the consumer looks at the clock while no text arrives


class GenerationStalled(RuntimeError):
    """The backend produced no token for too long; the message is one line for the user."""


_progress: "weakref.WeakKeyDictionary[object, float]" = weakref.WeakKeyDictionary()  # LoadedModel -> time


def beat(loaded) -> None:
    """The model made progress (a token, or it was just taken by a reply or a warm-up)."""
    _progress[loaded] = time.monotonic()


def stalled_for(loaded, limit: float) -> float | None:
    """Seconds since the model's last progress, when it is busy (locked) and that exceeds `limit`."""
    if not loaded.generate_lock.locked():
        return None
    idle = time.monotonic() - _progress.get(loaded, time.monotonic())
    return idle if idle > limit else None


def watched(streamer, loaded, stall_seconds: float, has_model: threading.Event) -> Iterator[str]:
    """The pieces of a TextIteratorStreamer made with timeout=WATCH_INTERVAL; raises GenerationStalled
    when the model stops making progress. `has_model`: this reply's worker holds the generate_lock."""
    while True:
        try:
            yield next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if (idle := stalled_for(loaded, stall_seconds)) is not None:
                raise GenerationStalled(f"the model produced no token for {idle:.0f} s"
                                        + ("" if has_model.is_set() else " (stuck on another reply)")
                                        + "; reply stopped, try again")


def join_unless_stuck(worker: threading.Thread, loaded, stall_seconds: float, stalled: threading.Event) -> None:
    """Wait for the generation thread, except one that is stuck: that daemon thread is left behind
    (holding the model until its backend returns), so the consumer is never frozen with it."""
    while worker.is_alive():
        worker.join(timeout=WATCH_INTERVAL)
        if stalled.is_set() or stalled_for(loaded, stall_seconds) is not None:
            return
