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
"""

from __future__ import annotations

import atexit
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
                 stall_seconds: float = STALL_SECONDS) -> ReplyStream:
    stream = ReplyStream()
    stream._pieces = _generate_pieces(loaded, prompt_ids, settings.validate(), stream, stall_seconds)
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


def _generate_pieces(loaded: LoadedModel, prompt_ids, settings, stream: ReplyStream,
                     stall_seconds: float) -> Iterator[str]:
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
        for piece in watched(streamer, loaded, stall_seconds, has_model):
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
