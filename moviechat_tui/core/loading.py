"""Model specs -> LoadedModel: the one place a model is loaded (specs.py says what a spec names).

A LoadedModel holds the tokenizer, the dialogue format, the transformers model (loaded on first
use when a converted copy serves the replies) and its backends: `transformers` always, and `fast`,
a llama.cpp or CTranslate2 copy, when one could be made. `loaded.backend` is the one replies come from.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import backends
from .backends import conversion_cache, ct2_cache, llamacpp_cache
from .backends.hf import TransformersBackend
from .dialogue import DialogueFormat, format_for
from .specs import DEFAULT_SPEC, OFFLINE_BASE, RUN_METADATA, ModelLoadError, _first_line, _recipe, _Recipe, _resolve

# What callers load models with (the spec names and the error come from specs.py).
__all__ = ["DEFAULT_SPEC", "RUN_METADATA", "LoadedModel", "ModelLoadError", "load_model"]

# Where each fast backend keeps its converted copies (fingerprint, find_converted, convert, open_converted).
_CACHES = {backends.LLAMACPP: llamacpp_cache, backends.CTRANSLATE2: ct2_cache}


class _Deferred:
    """A transformers model not loaded yet: the fast path runs without it."""

    def __init__(self, load: Callable[[], object]) -> None:
        self.load = load
        self.lock = threading.Lock()


class _ModelSlot:
    """`LoadedModel.model`: loads a deferred model on first use, so code that needs it still gets it."""

    def __get__(self, obj, objtype=None):
        if obj is None:
            raise AttributeError("model")  # no class-level default: the field stays required
        value = obj.__dict__["_model"]
        if isinstance(value, _Deferred):
            with value.lock:
                value = obj.__dict__["_model"]
                if isinstance(value, _Deferred):
                    value = obj.__dict__["_model"] = value.load()
                    obj.__dict__["_signature"] = _weights_signature(value)
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__["_model"] = value
        if not isinstance(value, _Deferred):
            obj.__dict__["_signature"] = _weights_signature(value)


def _weights_signature(model) -> tuple:
    """Changes when the model object is swapped, gains parameters (LoRA layers) or is changed in place."""
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    return id(model), len(params), sum(getattr(p, "_version", 0) for p in params)


@dataclass(repr=False, eq=False)
class LoadedModel:
    model: object = _ModelSlot()  # a transformers PreTrainedModel in eval mode (loaded on first use when deferred)
    tokenizer: object
    format: DialogueFormat
    spec: str  # as the user gave it
    source: str  # what it resolved to (a directory or hub id)
    context_window: int  # positions the model can attend to
    resolved: str = ""  # short name of what `spec` resolved to (for `default`)
    # Generation uses the global torch RNG and a lot of memory: one reply at a time per model.
    generate_lock: threading.Lock = field(default_factory=threading.Lock)
    fast: backends.Backend | None = None  # a converted copy (CTranslate2) that replies faster, when there is one
    backend_note: str = ""  # why the fast path is not used (or not in int8), when it isn't

    def __post_init__(self) -> None:
        # Reads self.model when it needs it: a deferred model loads on first use.
        self.transformers = TransformersBackend(lambda: self.model, self.tokenizer, self.context_window)

    @property
    def name(self) -> str:
        """How replies are labelled: the spec, plus what `default` stood for."""
        return f"{self.spec} ({self.resolved})" if self.resolved and self.resolved != self.spec else self.spec

    @property
    def backend(self) -> backends.Backend:
        """What replies come from: the fast copy while the transformers model in memory is still what was
        converted; else transformers, so that a model changed since (trained further, instrumented with
        hooks) is generated from directly and the change takes effect."""
        if self.fast is not None and not self.model_changed:
            return self.fast
        return self.transformers

    @property
    def model_materialized(self) -> bool:
        """Whether the transformers model is in memory (it is deferred while the fast path has no need of it)."""
        return not isinstance(self.__dict__.get("_model"), _Deferred)

    @property
    def model_changed(self) -> bool:
        """Whether the transformers model in memory is no longer the one that was loaded (and converted):
        weights changed in place, layers added (LoRA), or forward hooks registered (tests, debugging)."""
        if not self.model_materialized:
            return False
        model = self.model
        if _weights_signature(model) != self.__dict__.get("_signature"):
            return True
        return any(m._forward_hooks or m._forward_pre_hooks for m in getattr(model, "modules", list)())

    def __repr__(self) -> str:
        return f"LoadedModel(spec={self.spec!r}, source={self.source!r}, backend={self.backend.name!r})"


def load_model(spec: str = DEFAULT_SPEC, *, device: str | None = None, backend: str | None = None) -> LoadedModel:
    """Resolve `spec` (see specs.py) and load it in eval mode.

    `backend`: "auto" (the default, or $MOVIECHAT_BACKEND) generates on CPU from a llama.cpp GGUF
    copy of the model (written once, cached; q8_0 while it passes the quality guard, else f32),
    else from a CTranslate2 copy (int8 or float32, the same guard), falling back to transformers
    when neither package is installed or can run the model; "transformers" forces the plain path;
    "llama.cpp" or "ctranslate2" insists on that one.
    `loaded.backend.name` says which one is in use.
    """
    spec = (spec or DEFAULT_SPEC).strip()
    resolved = _resolve(spec)
    _quiet_transformers()
    recipe = _recipe(resolved)
    device = device or _best_device()
    short = resolved if resolved in (OFFLINE_BASE,) or not Path(resolved).is_dir() else Path(resolved).name
    try:
        candidates, note = backends.fast_candidates(backend, device)
    except backends.BackendError as exc:
        raise ModelLoadError(str(exc)) from exc
    if candidates and recipe.files is None:
        candidates, note = [], "the fast path needs the model's files on disk"
    to_convert = []  # (cache module, label, key, finished copy or None), each tried once the model is loaded
    for kind in candidates:
        cache = _CACHES[kind]
        label = conversion_cache.label_for(recipe.source)
        try:
            key = cache.fingerprint(recipe.files)
            converted = cache.find_converted(label, key)
        except (backends.BackendError, OSError) as exc:  # known not to work; OSError: unreadable files or cache
            note = str(exc)
            continue
        if converted is not None and not to_convert:
            loaded = _open_warm(recipe, cache, converted, device, spec, short, passed_over=note)
            if loaded is not None:
                return loaded
            converted = None  # damaged, and removed: converted again below
        to_convert.append((cache, label, key, converted))

    model, tokenizer = recipe.load()
    _ensure_pad(tokenizer)
    model.to(device).eval()
    config = model.config
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024
    fast = None
    for cache, label, key, converted in to_convert:  # the preferred first; a later one only if it can't be made
        try:
            converted = converted or cache.convert(model, tokenizer, label, key, int(context))
            fast = cache.open_converted(converted, tokenizer)
            break
        except backends.BackendError as exc:
            note = str(exc)
        except Exception as exc:  # a fast path is an optimisation: never a reason not to load
            note = f"the converted model could not be opened ({_first_line(exc)})"
    if fast is None and backends.insisted(backend):
        raise ModelLoadError(f"the {backends.requested_backend(backend)} backend was asked for, but {note}")
    return LoadedModel(model, tokenizer, format_for(tokenizer), spec, recipe.source,
                       fast.context_window if fast else int(context), short,
                       fast=fast, backend_note=_notes(note, fast.note) if fast else note)


def _notes(*notes: str) -> str:
    """Why the preferred fast path was passed over, and why the one in use is not in its fastest form."""
    return "; ".join(n for n in notes if n)


def _open_warm(recipe: _Recipe, cache, converted: Path, device: str, spec: str, short: str,
               passed_over: str = "") -> LoadedModel | None:
    """A cached conversion: the tokenizer and the fast copy; the transformers model waits until used."""
    tokenizer = _ensure_pad(recipe.load_tokenizer())
    try:
        fast = cache.open_converted(converted, tokenizer)
    except Exception:  # a damaged cache entry: convert again
        shutil.rmtree(converted, ignore_errors=True)
        return None

    def load_model_later():
        model, _ = recipe.load()
        return model.to(device).eval()

    return LoadedModel(_Deferred(load_model_later), tokenizer, format_for(tokenizer), spec, recipe.source,
                       fast.context_window, short, fast=fast, backend_note=_notes(passed_over, fast.note))


def _ensure_pad(tokenizer):
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quiet_transformers() -> None:
    """No progress bars or advice on stderr: the TUI and the CLI own the screen."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


