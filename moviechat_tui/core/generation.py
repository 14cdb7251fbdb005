"""Streaming a reply on a worker thread, text pieces out.

`stream_reply` returns a `ReplyStream`, an iterator of text pieces that ends at
the end-of-turn token, at `max_new_tokens`, or when cancelled. Two backends, one
behaviour: the CTranslate2 int8 copy of the model (fast.py, the default on CPU)
or transformers `generate` with the KV cache on. On both the first token can't
end the turn (no empty replies), the repetition penalty and the no-repeat n-gram
rule count the reply's tokens (not the history's), and one reply runs per model
at a time (the model's `generate_lock`).

A watchdog (watchdog.py) ends a reply whose backend produces no token for `stall_seconds`: the
reply ends as "error" with a GenerationStalled message and the consumer goes on, while the stuck
worker thread is left behind (a daemon).

`warm_prefix` has the model read a prompt's known beginning ahead of time, so
that the next reply only prefills what is new: on the fast path as a cached
CTranslate2 static prompt (fast.py), on the transformers path as a KV cache that
`generate` continues from (a copy of it, so the warmed state stays reusable).
"""

from __future__ import annotations

import atexit
import copy
import threading
import time
import weakref
from dataclasses import asdict, dataclass, fields
from typing import Iterator

from .backends.ct2 import MIN_PREFIX_TOKENS, longest_prefix
from .loading import LoadedModel
from .watchdog import (  # noqa: F401  (STALL_SECONDS, GenerationStalled: part of this module's API)
    STALL_SECONDS,
    WATCH_INTERVAL,
    GenerationStalled,
    beat,
    join_unless_stuck,
    watched,
)

PREFIX_STATES = 2  # KV caches the transformers path keeps warmed (the latest conversations')


class SettingsError(ValueError):
    """A decoding setting out of range; the message is one line."""


@dataclass
class GenerationSettings:
    # Defaults tuned against repetition loops in short movie lines.
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.15
    no_repeat_ngram_size: int = 3
    max_new_tokens: int = 64
    seed: int | None = None

    def validate(self) -> "GenerationSettings":
        checks = [
            (self.temperature >= 0, "temperature must be >= 0 (0 means greedy)"),
            (0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (self.top_k >= 0, "top-k must be >= 0 (0 disables it)"),
            (self.repetition_penalty > 0, "repetition penalty must be > 0 (1 disables it)"),
            (self.no_repeat_ngram_size >= 0, "no-repeat-ngram size must be >= 0 (0 disables it)"),
            (1 <= self.max_new_tokens <= 4096, "max new tokens must be between 1 and 4096"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def replace(self, **changes) -> "GenerationSettings":
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return GenerationSettings.from_dict(data)

    def generation_config(self, end_of_turn_id: int, pad_token_id: int):
        from transformers import GenerationConfig

        sample = self.temperature > 0
        return GenerationConfig(
            do_sample=sample,
            temperature=self.temperature if sample else None,
            top_p=self.top_p if sample else None,
            top_k=self.top_k if sample else None,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=1,  # the first token never ends the turn
            eos_token_id=end_of_turn_id,
            pad_token_id=pad_token_id,
            use_cache=True,
        )


@dataclass
class ReplyStats:
    new_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


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
    fast = uses_fast_path(loaded)
    if len(prefix_ids) < MIN_PREFIX_TOKENS:
        return None

    def run() -> None:
        try:
            with loaded.generate_lock:
                beat(loaded)
                if fast:
                    loaded.fast.warm(loaded.tokenizer, prefix_ids)
                else:
                    _warm_transformers(loaded, prefix_ids)
        except Exception:  # an optimisation only: the next reply reads the whole prompt instead
            pass

    worker = threading.Thread(target=run, name="moviechat-warm", daemon=True)
    _warming.add(worker)
    worker.start()
    if wait:
        worker.join()
    return worker


_warming: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


def _warm_transformers(loaded: LoadedModel, prefix_ids: list[int]) -> None:
    import torch

    key = tuple(prefix_ids)
    if key in loaded.prefix_states:
        loaded.prefix_states[key] = loaded.prefix_states.pop(key)  # most recent last
        return
    model = loaded.model
    if len(key) + 1 > loaded.context_window:
        return
    with torch.inference_mode():
        state = model(input_ids=torch.tensor([prefix_ids], device=model.device), use_cache=True).past_key_values
    loaded.prefix_states[key] = state
    while len(loaded.prefix_states) > PREFIX_STATES:
        loaded.prefix_states.pop(next(iter(loaded.prefix_states)))


def cache_keyword(model) -> str:
    """`cache` in newer transformers (where `past_key_values` is deprecated), else `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _join_warming() -> None:
    """At exit, let a warm-up finish before the fast path's generators are freed (fast._close_all)."""
    for worker in list(_warming):
        worker.join(timeout=10)


atexit.register(_join_warming)  # registered after fast's hook (imported above), so it runs first


def uses_fast_path(loaded: LoadedModel) -> bool:
    """Whether replies come from the CTranslate2 copy: while there is one and the transformers model
    in memory is still what was converted. A model changed since (trained further, instrumented
    with hooks) is generated from directly, so the change takes effect."""
    return loaded.fast is not None and not loaded.model_changed


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
                if stream.stats.first_token_seconds is None:
                    stream.stats.first_token_seconds = time.perf_counter() - started
            super().put(value)

    # The timeout only wakes the consumer up to look at the watchdog; text arrives word by word.
    streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                timeout=min(WATCH_INTERVAL, stall_seconds))
    fast = uses_fast_path(loaded)
    stalled = threading.Event()  # set by the consumer: the worker no longer owns the outcome
    has_model = threading.Event()  # the worker holds the generate_lock

    def run() -> None:
        try:
            with loaded.generate_lock:
                beat(loaded)
                has_model.set()
                if stream.cancelled:  # given up on while it waited for the model
                    return
                if fast:
                    streamer.put(torch.tensor(prompt_ids))
                    new = loaded.fast.generate(
                        tokenizer, prompt_ids, settings, eot,
                        on_token=lambda token: streamer.put(torch.tensor([token])),
                        cancelled=stream._cancel.is_set,
                    )
                    streamer.end()
                else:
                    new = _transformers_generate(loaded, prompt_ids, settings, streamer, stream)
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


def _transformers_generate(loaded: LoadedModel, prompt_ids, settings, streamer, stream: ReplyStream) -> list[int]:
    import torch
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        StoppingCriteria,
        StoppingCriteriaList,
    )

    tokenizer, model, eot = loaded.tokenizer, loaded.model, loaded.format.end_of_turn_id

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return stream._cancel.is_set()

    n_prompt = len(prompt_ids)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    config = settings.generation_config(eot, tokenizer.pad_token_id)
    # The penalties look at the reply only, not the whole history (which holds every earlier
    # end-of-turn token and reply opening), as CTranslate2 applies them on the fast path.
    config.repetition_penalty, config.no_repeat_ngram_size = 1.0, 0
    processors = [_NoBlankReply(tokenizer, eot, n_prompt)]
    if settings.repetition_penalty != 1.0:
        processors.insert(0, _OnReply(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty), n_prompt))
    if settings.no_repeat_ngram_size > 0:
        processors.insert(-1, _OnReply(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size), n_prompt))
    with torch.inference_mode():
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        start = {}
        cached = longest_prefix(loaded.prefix_states, prompt_ids)
        if cached:  # continue from the warmed state; a copy, since generate extends it in place
            start[cache_keyword(model)] = copy.deepcopy(loaded.prefix_states[tuple(prompt_ids[:cached])])
            loaded.prefix_hits += 1
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([Cancelled()]),
            logits_processor=LogitsProcessorList(processors),
            **start,
        )
    return output[0, n_prompt:].tolist()


class _OnReply:
    """Run a logits processor over the reply's tokens only."""

    def __init__(self, processor, prompt_length: int) -> None:
        self.processor, self.start = processor, prompt_length

    def __call__(self, input_ids, scores):
        return self.processor(input_ids[:, self.start:], scores)


class _NoBlankReply:
    """Forbid ending the turn while the reply is still only whitespace."""

    def __init__(self, tokenizer, end_of_turn_id: int, prompt_length: int) -> None:
        self.tokenizer, self.eot, self.start = tokenizer, end_of_turn_id, prompt_length
        self.has_text = False  # once the reply has text it stays non-blank: stop decoding

    def __call__(self, input_ids, scores):
        if not self.has_text:
            generated = input_ids[0, self.start:]
            self.has_text = bool(self.tokenizer.decode(generated, skip_special_tokens=True).strip())
            if not self.has_text:
                scores[:, self.eot] = -float("inf")
        return scores
