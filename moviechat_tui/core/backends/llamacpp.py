"""The llama.cpp backend: replies from a GGUF copy of the model, the fastest path on CPU.

`load_model` asks `fast_candidates` whether to use it (on CPU, when llama-cpp-python is installed,
unless MOVIECHAT_BACKEND names another), then llamacpp_cache finds or makes the GGUF file and
opens it here. llama.cpp computes the logits of each step; sampling.NextToken picks the token with
transformers' own processors, so every decoding setting means what it means on the transformers
backend (a seed reproduces replies on this backend; greedy replies match transformers').

Prefix cache: llama.cpp keeps one KV cache per context. A prompt that starts with what the cache
already holds (the history through the last reply, or a prefix `warm` read ahead) prefills only
the rest; anything after the shared beginning is dropped from the cache first.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import MIN_PREFIX_TOKENS
from .quality import guard_note
from .sampling import NextToken


@dataclass(eq=False)
class LlamaCppBackend:
    llm: object  # llama_cpp.Llama (the model and one context)
    tokenizer: object  # only to tell a blank reply (prompts travel as ids)
    path: Path
    weights: str  # "q8_0", "f32", ...: how the GGUF stores the weights
    context_window: int
    quality: dict = field(default_factory=dict)  # the guard's figures per weights (quality.guard_metadata)
    prefix_hits: int = 0
    cached: list[int] = field(default_factory=list)  # the ids whose state the KV cache holds, in order

    def __post_init__(self) -> None:
        self._vocab = self.llm.n_vocab() if self.llm is not None else 0

    @property
    def name(self) -> str:
        return f"llama.cpp-{self.weights}"

    @property
    def note(self) -> str:
        """Why these weights, when a faster copy failed the quality guard at conversion."""
        return guard_note(self.quality, self.weights)

    # --- the KV cache -------------------------------------------------------------------------

    def _shared(self, ids: Sequence[int]) -> int:
        """How many leading ids the cache already holds (at most len(ids) - 1: one token is always fed)."""
        n, limit = 0, min(len(self.cached), len(ids) - 1)
        while n < limit and self.cached[n] == ids[n]:
            n += 1
        return n

    def _feed(self, ids: Sequence[int], keep: int) -> None:
        """Keep the cache's first `keep` ids, then read `ids[keep:]`; the last one's logits come next."""
        import llama_cpp

        if keep < len(self.cached):
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm.ctx), -1, keep, -1)
            del self.cached[keep:]
        self._extend(ids[keep:])

    def _extend(self, ids: Sequence[int]) -> None:
        """Read `ids` after what the cache holds."""
        self.llm.n_tokens = len(self.cached)
        self.llm.eval(list(ids))
        self.cached.extend(ids)

    def _last_logits(self):
        import llama_cpp
        import numpy as np
        import torch

        # A view of llama.cpp's buffer, no copy: it is read (and changed in place) before the next decode.
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self._vocab,)))

    def clear_prefixes(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        self.cached.clear()
        self.llm.n_tokens = 0

    def warm(self, prefix_ids: Sequence[int]) -> bool:
        prefix = list(prefix_ids)
        if len(prefix) < MIN_PREFIX_TOKENS or len(prefix) + 1 > self.context_window:
            return False
        if self.cached[: len(prefix)] == prefix:
            return False
        self._feed(prefix, self._shared(prefix + [-1]))
        return True

    # --- the Backend protocol -----------------------------------------------------------------

    def logits(self, ids: Sequence[int]):
        """Next-token logits at every position (the quality guard): one batch with every output kept."""
        import llama_cpp
        import numpy as np
        import torch

        self.clear_prefixes()
        ids = list(ids)
        batch = llama_cpp.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, token in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, True
            if llama_cpp.llama_decode(self.llm.ctx, batch) != 0:
                raise RuntimeError("llama.cpp could not score the prompt")
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.llm.ctx),
                                         shape=(len(ids), self.llm.n_vocab()))
            out = torch.from_numpy(rows.copy())
        finally:
            llama_cpp.llama_batch_free(batch)
            self.clear_prefixes()
        return out

    def generate(self, ids: Sequence[int], settings, on_token: Callable[[int], None],
                 cancelled: Callable[[], bool], end_of_turn_id: int) -> list[int]:
        import torch

        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        ids = list(ids)
        keep = self._shared(ids)
        if keep >= MIN_PREFIX_TOKENS:
            self.prefix_hits += 1
        if cancelled():
            return []
        self._feed(ids, keep)
        chooser = NextToken(settings, self.tokenizer, end_of_turn_id)
        new: list[int] = []
        while len(new) < settings.max_new_tokens and not cancelled():
            token = chooser.pick(self._last_logits(), new)
            new.append(token)
            on_token(token)
            if token == end_of_turn_id or len(new) == settings.max_new_tokens:
                break
            self._extend([token])
        return new


def open_gguf(path: Path, tokenizer, weights: str, context_window: int, quality: dict, threads: int) -> LlamaCppBackend:
    """Open a GGUF file with one context of `context_window` positions on `threads` CPU threads."""
    from llama_cpp import Llama

    quiet()
    llm = Llama(str(path), n_ctx=context_window, n_batch=512, n_threads=threads, n_threads_batch=threads,
                flash_attn=True, verbose=False)
    return LlamaCppBackend(llm, tokenizer, Path(path), weights, context_window, quality)


_LOG_CALLBACK = None  # kept referenced: llama.cpp calls it from C


def quiet() -> None:
    """No llama.cpp log lines on stderr: the TUI and the CLI own the screen."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
