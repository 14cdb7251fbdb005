"""Streaming a reply: transformers `generate` on a worker thread, text pieces out.

`stream_reply` returns a `ReplyStream`, an iterator of text pieces that ends at
the end-of-turn token, at `max_new_tokens`, or when cancelled. The KV cache is
on, the first token can't end the turn (no empty replies), and one reply runs
per model at a time (the model's `generate_lock`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Iterator

from .models import LoadedModel


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


def stream_reply(loaded: LoadedModel, prompt_ids: list[int], settings: GenerationSettings) -> ReplyStream:
    stream = ReplyStream()
    stream._pieces = _generate_pieces(loaded, prompt_ids, settings.validate(), stream)
    return stream


def _generate_pieces(loaded: LoadedModel, prompt_ids, settings, stream: ReplyStream) -> Iterator[str]:
    import torch
    from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    fmt, tokenizer, model = loaded.format, loaded.tokenizer, loaded.model
    eot = fmt.end_of_turn_id

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return stream._cancel.is_set()

    class CountingStreamer(TextIteratorStreamer):
        def put(self, value):
            if not self.next_tokens_are_prompt:
                stream.stats.new_tokens += value.numel()
                if stream.stats.first_token_seconds is None:
                    stream.stats.first_token_seconds = time.perf_counter() - started
            super().put(value)

    streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    config = settings.generation_config(eot, tokenizer.pad_token_id)
    n_prompt = len(prompt_ids)

    def run() -> None:
        try:
            with loaded.generate_lock, torch.inference_mode():
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([Cancelled()]),
                    logits_processor=LogitsProcessorList([_NoBlankReply(tokenizer, eot, n_prompt)]),
                )
            new = output[0, n_prompt:].tolist()
            if stream.cancelled:
                stream.finish_reason = "cancelled"
            elif new and new[-1] == eot:
                stream.finish_reason = "end_of_turn"
            else:
                stream.finish_reason = "length"
        except BaseException as exc:  # surfaced to the consumer below
            stream.error, stream.finish_reason = exc, "error"
            streamer.end()

    started = time.perf_counter()
    worker = threading.Thread(target=run, name="moviechat-generate", daemon=True)
    worker.start()
    drained = False
    try:
        for piece in streamer:
            if not stream.text:
                piece = piece.lstrip()  # the plain format puts a space after "Bot:"
                if not piece:
                    continue
            stream.text += piece
            yield piece
        drained = True
    finally:
        if not drained:  # the consumer stopped listening (or failed): stop generating
            stream.cancel()
        worker.join()
        stream.stats.seconds = time.perf_counter() - started
        stream.text = stream.text.rstrip()
        if stream.finish_reason is None:
            stream.finish_reason = "cancelled"
    if stream.error is not None:
        raise stream.error


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
