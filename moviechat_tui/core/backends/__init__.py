"""Generation backends: what turns prompt ids into a reply's ids, one module each.

    hf.py        transformers `generate` on any device: always there, the last fallback
    llamacpp.py  a GGUF copy run by llama.cpp (llamacpp_cache.py writes it once, gguf_export.py
                 knows the format): the default on CPU, the fastest there (docs/benchmarks.md)
    ct2.py       a CTranslate2 copy (ct2_cache.py converts it once): on CPU when llama.cpp is
                 missing or can't run the model
    sampling.py  the next token from logits, as transformers picks it (for llama.cpp)
    quality.py   the quality guard: how much a converted copy raises reply perplexity
    conversion_cache.py  where converted copies are kept, keyed by the model's files

A new backend is one more module with a class that implements `Backend`, a place in
`FAST_ORDER`, and a branch in loading.load_model that opens it.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

BACKEND_ENV = "MOVIECHAT_BACKEND"
AUTO, TRANSFORMERS, CTRANSLATE2, LLAMACPP = "auto", "transformers", "ctranslate2", "llama.cpp"
BACKENDS = (AUTO, LLAMACPP, CTRANSLATE2, TRANSFORMERS)
FAST_ORDER = (LLAMACPP, CTRANSLATE2)  # on CPU, the first installed one that can run the model serves replies
INSTALL_HINT = {
    LLAMACPP: "pip install llama-cpp-python==0.3.36 (make setup builds it)",
    CTRANSLATE2: "pip install 'ctranslate2>=4.5,<5'",
}
MIN_PREFIX_TOKENS = 16  # shorter prefixes cost less to prefill than to look up
THREADS_ENV = "MOVIECHAT_THREADS"  # e.g. 1 on a machine shared with other heavy jobs


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


def threads() -> int:
    """CPU threads for one reply: $MOVIECHAT_THREADS, else the cores this process may use."""
    if os.environ.get(THREADS_ENV, "").strip().isdigit() and int(os.environ[THREADS_ENV]) > 0:
        return int(os.environ[THREADS_ENV])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def installed(kind: str) -> bool:
    """Whether the package behind a fast backend imports."""
    return (llamacpp_installed if kind == LLAMACPP else ctranslate2_installed)()


def ctranslate2_installed() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def llamacpp_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):  # OSError: the package is there but its library won't load
        return False
    return True


def _normalise(name: str) -> str:
    name = name.strip().lower()
    return LLAMACPP if name in ("llamacpp", "llama-cpp", "llama_cpp") else name


def requested_backend(requested: str | None) -> str:
    """The backend asked for: `requested`, else $MOVIECHAT_BACKEND, else auto (BackendError if unknown)."""
    choice = _normalise(requested or os.environ.get(BACKEND_ENV) or AUTO)
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {choice!r} (from {BACKEND_ENV}?); use one of {', '.join(BACKENDS)}")
    return choice


def fast_candidates(requested: str | None, device: str) -> tuple[list[str], str]:
    """The fast backends to try in order for a load on `device`, and why there are none when there aren't."""
    choice = requested_backend(requested)
    if choice == TRANSFORMERS:
        return [], "the transformers backend was asked for"
    if choice in FAST_ORDER:
        if not installed(choice):
            raise BackendError(f"the {choice} backend needs its package: {INSTALL_HINT[choice]}")
        return [choice], ""
    if device != "cpu":
        return [], f"the fast paths are for CPU and the model runs on {device}"
    found = [kind for kind in FAST_ORDER if installed(kind)]
    if not found:
        return [], "neither llama-cpp-python nor ctranslate2 is installed (no fast path)"
    return found, ""


def insisted(requested: str | None) -> bool:
    """Whether a fast path was asked for by name (so falling back would be wrong)."""
    return _normalise(requested or os.environ.get(BACKEND_ENV) or "") in FAST_ORDER


ROLES = {
    LLAMACPP: "first on CPU: a GGUF copy, q8_0 while the quality guard passes, else f32",
    CTRANSLATE2: "on CPU when llama.cpp is missing or can't run the model: int8 or float32 by the same guard",
    TRANSFORMERS: "always there: on GPUs, when no fast copy can be made, for a model changed in memory",
}


def describe_backends(requested: str | None = None, device: str = "cpu") -> list[tuple[str, bool, str]]:
    """(backend, installed, what it is for, and whether `requested` on `device` tries it) in the order tried."""
    try:
        found, why = fast_candidates(requested, device)
    except BackendError as exc:
        found, why = [], str(exc)
    rows = []
    for kind in (*FAST_ORDER, TRANSFORMERS):
        available = True if kind == TRANSFORMERS else installed(kind)
        note = ROLES[kind]
        if kind in FAST_ORDER and not available:
            note = f"not installed: {INSTALL_HINT[kind]}"
        elif kind in FAST_ORDER and kind not in found:
            note = f"skipped: {why}" if why else "skipped"
        rows.append((kind, available, note))
    return rows
