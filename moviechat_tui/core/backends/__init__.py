"""Generation backends: what turns prompt ids into a reply's ids, one module each.

    hf.py       transformers `generate` on any device: always there, the fallback
    ct2.py      a CTranslate2 copy of the model (ct2_cache.py converts it once): the default on CPU
    quality.py  the quality guard: how much a converted copy raises reply perplexity

A new backend (llama.cpp, issue 12) is one more module with a class that implements `Backend`,
a choice in `choose_backend`, and a branch in loading.load_model that opens it.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

BACKEND_ENV = "MOVIECHAT_BACKEND"
AUTO, TRANSFORMERS, CTRANSLATE2 = "auto", "transformers", "ctranslate2"
BACKENDS = (AUTO, TRANSFORMERS, CTRANSLATE2)
MIN_PREFIX_TOKENS = 16  # shorter prefixes cost less to prefill than to look up


class BackendError(Exception):
    """A backend can't serve this model (or was asked for wrongly); the message is one line."""


@runtime_checkable
class Backend(Protocol):
    """One way of generating from a loaded model. Calls come with the model's generate_lock held."""

    name: str  # what replies come from, e.g. "ctranslate2-int8" or "transformers-fp32"
    prefix_hits: int  # replies that started from a warmed prefix (tests and the benchmark read it)

    def generate(self, ids: Sequence[int], settings, on_token: Callable[[int], None],
                 cancelled: Callable[[], bool], end_of_turn_id: int) -> list[int]:
        """Decode one reply to `ids` with `settings` (a GenerationSettings), calling `on_token` with each
        new id; stop at `end_of_turn_id` (included in the result), at settings.max_new_tokens, or once
        `cancelled()`. Every backend keeps the same rules: the first token never ends the turn, a reply
        that is still blank can't end, the penalties count the reply's tokens only."""
        ...

    def warm(self, prefix_ids: Sequence[int]) -> bool:
        """Compute and keep the model state after `prefix_ids`, so that a prompt starting with them
        prefills only the rest (replies stay the same). Returns whether anything was computed."""
        ...

    def clear_prefixes(self) -> None:
        """Forget every warmed prefix."""
        ...

    def logits(self, ids: Sequence[int]):
        """Teacher-forced next-token logits at every position of `ids` (a float32 torch tensor,
        len(ids) x vocabulary): what the quality guard compares."""
        ...


def longest_prefix(prefixes: Iterable[tuple[int, ...]], ids: Sequence[int]) -> int:
    """Length of the longest of `prefixes` that starts `ids` and leaves at least one token to feed."""
    return max((len(p) for p in prefixes if len(p) < len(ids) and tuple(ids[: len(p)]) == p), default=0)


def ctranslate2_installed() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(requested: str | None, device: str) -> tuple[str, str]:
    """(TRANSFORMERS or CTRANSLATE2, why) for a load on `device`; `requested` None reads MOVIECHAT_BACKEND."""
    choice = (requested or os.environ.get(BACKEND_ENV) or AUTO).strip().lower()
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {choice!r} (from {BACKEND_ENV}?); use one of {', '.join(BACKENDS)}")
    if choice == TRANSFORMERS:
        return TRANSFORMERS, "the transformers backend was asked for"
    if not ctranslate2_installed():
        if choice == CTRANSLATE2:
            raise BackendError("the ctranslate2 backend needs the ctranslate2 package: pip install 'ctranslate2>=4.5,<5'")
        return TRANSFORMERS, "ctranslate2 is not installed"
    if choice == AUTO and device != "cpu":
        return TRANSFORMERS, f"the fast path is for CPU and the model runs on {device}"
    return CTRANSLATE2, ""


def insisted(requested: str | None) -> bool:
    """Whether the fast path was asked for by name (so falling back would be wrong)."""
    return (requested or os.environ.get(BACKEND_ENV) or "").strip().lower() == CTRANSLATE2
