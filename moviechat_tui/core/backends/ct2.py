"""The CTranslate2 backend: replies from a CTranslate2 copy of the model, the default on CPU.

`load_model` asks `fast_candidates` whether to use it (on CPU, when ctranslate2 is installed, unless
MOVIECHAT_BACKEND=transformers), then ct2_cache finds or makes the conversion and opens it here.

`CT2Backend.generate` decodes with the same knobs and rules as the transformers backend (hf.py):
penalties count the reply's tokens, the end-of-turn token can't end a reply that is still blank,
a seed makes sampling reproducible (per backend: the two draw random numbers differently).

Prefix cache: `warm(ids)` computes the model state after `ids` once (CTranslate2's cached
`static_prompt`); a later prompt that starts with them prefills only the rest. The engine warms
the next turn's prefix (the history through the reply just given) while the user reads and types,
so the next first token doesn't wait for the whole history to be read again. CTranslate2 never
evicts cached prompts, so past MAX_CACHED_TOKENS the generator is reopened empty.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import MIN_PREFIX_TOKENS, longest_prefix, threads
from .quality import guard_note

MAX_CACHED_TOKENS = 8192  # prefix tokens whose state CTranslate2 keeps (SmolLM2-135M: ~45 KB each in float32)


@dataclass(eq=False)  # hashable by identity, for the set of open backends
class CT2Backend:
    generator: object  # ctranslate2.Generator
    tokenizer: object  # prompts travel as token strings
    directory: Path
    compute_type: str
    context_window: int
    quality: dict  # the guard's figures per compute type (quality.guard_metadata)
    # Warmed prefixes (token ids), least recently used first; their states live in the generator.
    prefixes: "OrderedDict[tuple[int, ...], None]" = field(default_factory=OrderedDict)
    prefix_hits: int = 0

    @property
    def name(self) -> str:
        return f"ctranslate2-{self.compute_type}"

    @property
    def note(self) -> str:
        """Why a float32 copy, when int8 failed the quality guard."""
        return guard_note(self.quality, self.compute_type)

    def reseed(self, seed: int) -> None:
        """Make the next samples follow `seed`.

        CTranslate2 samples on its worker thread with a random generator seeded when that thread
        first samples, so a new seed needs a new worker: the model is opened again (a fraction of
        a second, from the page cache) and replaces the current one.
        """
        import ctranslate2

        ctranslate2.set_random_seed(seed)
        self.clear_prefixes()

    def clear_prefixes(self) -> None:
        """A fresh generator: also what empties CTranslate2's prompt cache."""
        self.generator = new_generator(self.directory, self.compute_type)
        self.prefixes.clear()

    def cached_prefix(self, ids: Sequence[int]) -> int:
        return longest_prefix(self.prefixes, ids)

    def _tokens(self, ids) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    def warm(self, prefix_ids: Sequence[int]) -> bool:
        prefix = tuple(prefix_ids)
        if len(prefix) < MIN_PREFIX_TOKENS or len(prefix) + 1 > self.context_window:
            return False
        if prefix in self.prefixes:
            self.prefixes.move_to_end(prefix)
            return False
        if sum(map(len, self.prefixes)) + len(prefix) > MAX_CACHED_TOKENS:
            self.clear_prefixes()
        # One throwaway step after the static prompt: CTranslate2 caches the state at its end.
        self.generator.generate_batch([self._tokens(prefix[-1:])], max_length=1, static_prompt=self._tokens(prefix))
        self.prefixes[prefix] = None
        return True

    def logits(self, ids: Sequence[int]):
        import numpy as np
        import torch

        return torch.from_numpy(np.asarray(self.generator.forward_batch([self._tokens(ids)]))[0].copy()).float()

    def generate(self, ids: Sequence[int], settings, on_token: Callable[[int], None],
                 cancelled: Callable[[], bool], end_of_turn_id: int) -> list[int]:
        """Decode one reply; returns its ids (ending with end_of_turn_id if the turn ended)."""
        if settings.seed is not None:
            self.reseed(settings.seed)
        options = _decoding_options(settings)
        new: list[int] = []
        while len(new) < settings.max_new_tokens and not cancelled():
            so_far = list(ids) + new
            cached = self.cached_prefix(so_far)
            start = {}
            if cached:  # feed only what follows the warmed prefix
                self.prefixes.move_to_end(tuple(so_far[:cached]))
                self.prefix_hits += 1
                start["static_prompt"] = self._tokens(so_far[:cached])
            steps = self.generator.generate_tokens(
                self._tokens(so_far[cached:]),
                max_length=settings.max_new_tokens - len(new),
                min_length=1,  # the first token never ends the turn
                end_token=[end_of_turn_id],
                **options,
                **start,
            )
            blank_end = False
            with contextlib.closing(steps):
                for step in steps:
                    if cancelled():
                        break
                    if step.token_id == end_of_turn_id:
                        # Only whitespace so far: go on from here with the end forbidden once more, as the
                        # transformers backend's _NoBlankReply does. (Penalties then count these tokens as prompt.)
                        blank_end = not self.tokenizer.decode(new, skip_special_tokens=True).strip()
                        if not blank_end:
                            new.append(step.token_id)
                            on_token(step.token_id)
                        break
                    new.append(step.token_id)
                    on_token(step.token_id)
            if not blank_end:
                break
        return new


def _decoding_options(settings) -> dict:
    options = {
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": settings.no_repeat_ngram_size,
    }
    if settings.temperature > 0:
        options.update(
            sampling_temperature=settings.temperature,
            sampling_topk=settings.top_k,  # 0: no top-k cut, as in transformers
            sampling_topp=settings.top_p,
        )
    else:
        options["sampling_topk"] = 1  # greedy
    return options


_open_models: "weakref.WeakSet[CT2Backend]" = weakref.WeakSet()  # closed at exit (see _close_all)


def new_generator(directory: Path, compute_type: str):
    import ctranslate2

    return ctranslate2.Generator(str(directory), device="cpu", compute_type=compute_type, intra_threads=threads())


def _close_all() -> None:
    """Free the generators while Python still runs. A CTranslate2 worker thread that releases a
    finished reply's callback needs the GIL; during interpreter teardown that kills the thread
    inside C++ code, which aborts the process ("terminate called without an active exception")."""
    for model in list(_open_models):
        model.generator = None


atexit.register(_close_all)


def track(backend: CT2Backend) -> CT2Backend:
    """Free its generator at exit (see _close_all)."""
    _open_models.add(backend)
    return backend
