"""Streaming a reply on a worker thread, text pieces out.

`stream_reply` returns a `ReplyStream`, an iterator of text pieces that ends at
the end-of-turn token, at `max_new_tokens`, or when cancelled. The tokens come from
`loaded.backend` (see backends/: the CTranslate2 copy on CPU, else transformers), which
keeps the same rules on every backend; one reply runs per model at a time (the model's
`generate_lock`).

A watchdog (watchdog.py) ends a reply whose backend produces no token for `stall_seconds`: the
reply ends as "error" with a GenerationStalled message and the consumer goes on, while the stuck
worker thread is left behind (a daemon).

`warm_prefix` has the backend read a prompt's known beginning ahead of time, so that the
next reply only prefills what is new.

The consumer gets the first piece at once and then what has arrived at most every PIECE_SECONDS:
whatever it does per piece (a database write, redrawing the screen) takes a core from the model's
threads, which wait for each other at every layer; per word, that halved decoding on two cores.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Iterator

from .backends import MIN_PREFIX_TOKENS
from .loading import LoadedModel
from .settings import GenerationSettings
from .watchdog import (  # noqa: F401  (STALL_SECONDS, GenerationStalled: part of this module's API)
    STALL_SECONDS,
    WATCH_INTERVAL,
    GenerationStalled,
    beat,
    join_unless_stuck,
    watched,
)

# The consumer's pace after the first piece: smooth to read, and ~20 wake-ups a second instead of ~100.
PIECE_SECONDS = 0.05


@dataclass
class ReplyStats:
    new_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    last_token_seconds: float | None = None  # when the model gave its last token (the consumer may read later)

    @property
    def tokens_per_second(self) -> float:
        """New tokens over the whole reply, the wait for the first one included."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float | None:
        """The tokens after the first over the time the model took for them: the decoding speed alone,
        which a short reply's overall rate hides under the history's prefill and the reader's pace.
        None below two tokens."""
        end = self.seconds if self.last_token_seconds is None else self.last_token_seconds
        if self.first_token_seconds is None or self.new_tokens < 2 or end <= self.first_token_seconds:
            return None
        return (self.new_tokens - 1) / (end - self.first_token_seconds)


class ReplyStream:
    """Iterate for text pieces; `cancel()` from any thread; then read `.text`, `.finish_reason`."""

    def __init__(self) -> None:
        self.text = ""
        self.finish_reason: str | None = None  # "end_of_turn" | "length" | "cancelled" | "error"
        self.error: BaseException | None = None
        self.stats = ReplyStats()
        self._cancel = threading.Event()
        self._pieces: Iterator[str] = iter(())

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        """Stop and wait for the generation thread (a no-op once the stream has ended)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


def stream_reply(loaded: LoadedModel, prompt_ids: list[int], settings: GenerationSettings,
                 stall_seconds: float = STALL_SECONDS, piece_seconds: float = PIECE_SECONDS) -> ReplyStream:
    stream = ReplyStream()
    stream._pieces = _generate_pieces(loaded, prompt_ids, settings.validate(), stream, stall_seconds,
                                      piece_seconds)
    return stream


def warm_prefix(loaded: LoadedModel, prefix_ids: list[int], wait: bool = False) -> threading.Thread | None:
    """Compute the model state after `prefix_ids` on a background thread (None: nothing to do).

    A reply whose prompt starts with these ids then prefills only the rest; replies are the same
    (the state is the one the full prompt would build). A reply asked for meanwhile waits for the
    warm-up, which is the work it would otherwise do itself.
    """
    if len(prefix_ids) < MIN_PREFIX_TOKENS:
        return None

    def run() -> None:
        try:
            with loaded.generate_lock:
                beat(loaded)
                loaded.backend.warm(prefix_ids)
        except Exception:  # an optimisation only: the next reply reads the whole prompt instead
            pass

    worker = threading.Thread(target=run, name="moviechat-warm", daemon=True)
    _warming.add(worker)
    worker.start()
    if wait:
        worker.join()
    return worker


_warming: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


def _join_warming() -> None:
    """At exit, let a warm-up finish before the CTranslate2 generators are freed (ct2._close_all)."""
    for worker in list(_warming):
        worker.join(timeout=10)


atexit.register(_join_warming)  # registered after ct2's hook (imported above), so it runs first


def paced(streamer, pieces: Iterator[str], seconds: float) -> Iterator[str]:
    """`pieces` (read from `streamer`, a TextIteratorStreamer) with the consumer woken at most once per
    `seconds`: after each piece it sleeps out the rest of the interval, then takes the next piece
    together with all that queued up meanwhile. The first piece comes as soon as it is there."""
    for piece in pieces:
        more, ended = streamer.queued()
        handed = time.monotonic()
        yield piece + "".join(more)
        if ended:  # the end was among them: next(pieces) would wait for an end already taken
            return
        rest = seconds - (time.monotonic() - handed)  # the consumer's own work counts
        if rest > 0:
            time.sleep(rest)


def _generate_pieces(loaded: LoadedModel, prompt_ids, settings, stream: ReplyStream,
                     stall_seconds: float, piece_seconds: float = PIECE_SECONDS) -> Iterator[str]:
    import torch
    from transformers import TextIteratorStreamer

    tokenizer, eot = loaded.tokenizer, loaded.format.end_of_turn_id

    class CountingStreamer(TextIteratorStreamer):
        def put(self, value):
            if not self.next_tokens_are_prompt:
                beat(loaded)
                stream.stats.new_tokens += value.numel()
                stream.stats.last_token_seconds = time.perf_counter() - started
                if stream.stats.first_token_seconds is None:
                    stream.stats.first_token_seconds = stream.stats.last_token_seconds
            super().put(value)

        def queued(self) -> tuple[list[str], bool]:
            """The pieces waiting now (no wait), and whether the end of the reply is among them."""
            pieces = []
            while True:
                try:
                    value = self.text_queue.get_nowait()
                except queue.Empty:
                    return pieces, False
                if value is self.stop_signal:
                    return pieces, True
                pieces.append(value)

    # The timeout only wakes the consumer up to look at the watchdog; text arrives word by word.
    streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                timeout=min(WATCH_INTERVAL, stall_seconds))
    backend = loaded.backend
    stalled = threading.Event()  # set by the consumer: the worker no longer owns the outcome
    has_model = threading.Event()  # the worker holds the generate_lock

    def run() -> None:
        try:
            with loaded.generate_lock:
                beat(loaded)
                has_model.set()
                if stream.cancelled:  # given up on while it waited for the model (or before it started)
                    streamer.end()  # else the consumer would wait for text that never comes
                    return
                streamer.put(torch.tensor(prompt_ids))
                new = backend.generate(prompt_ids, settings, lambda token: streamer.put(torch.tensor([token])),
                                       stream._cancel.is_set, eot)
                streamer.end()
            if not stalled.is_set():  # else the consumer has already ended the reply
                stream.finish_reason = ("cancelled" if stream.cancelled else
                                        "end_of_turn" if new and new[-1] == eot else "length")
        except BaseException as exc:  # surfaced to the consumer below
            if not stalled.is_set():
                stream.error, stream.finish_reason = exc, "error"
            streamer.end()

    started = time.perf_counter()
    worker = threading.Thread(target=run, name="moviechat-generate", daemon=True)
    worker.start()
    drained = False
    try:
        for piece in paced(streamer, watched(streamer, loaded, stall_seconds, has_model), piece_seconds):
            if not stream.text:
                piece = piece.lstrip()  # the plain format puts a space after "Bot:"
                if not piece:
                    continue
            stream.text += piece
            yield piece
        drained = True
    except GenerationStalled as exc:
        stalled.set()
        stream.error, stream.finish_reason = exc, "error"
    finally:
        if not drained:  # the consumer stopped listening (or failed): stop generating
            stream.cancel()
        join_unless_stuck(worker, loaded, stall_seconds, stalled)
        stream.stats.seconds = time.perf_counter() - started
        stream.text = stream.text.rstrip()
        if stream.finish_reason is None:
            stream.finish_reason = "cancelled"
    if stream.error is not None:
        raise stream.error
