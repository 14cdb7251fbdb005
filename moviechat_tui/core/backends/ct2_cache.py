"""The CTranslate2 conversion cache: a model converted once, keyed by its files.

`find_converted(label, key)` finds a conversion of exactly these model files, else `convert`
makes one from the model already in memory (so merged LoRA adapters convert as they are used).
Conversions live in cache_dir()/ctranslate2/, keyed by a fingerprint of the model's files and the
converter version, so a retrained or replaced model is converted again and a read-only package
directory is never written to.

int8 or float32: a conversion is int8 only if that raises the perplexity of everyday replies, and
of replies that use the history, each by at most quality.QUALITY_LIMIT_PCT over the model in
memory (the quality guard, quality.compare);
otherwise it is float32, exact and faster than transformers by less.
MOVIECHAT_FAST_COMPUTE=int8|float32 overrides the choice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from ..paths import build_dir_for
from .conversion_cache import ConversionCache, choice_from_env, files_digest
from .ct2 import CT2Backend, new_generator, track
from .quality import QualityReport, compare, guard_figures, guard_metadata

COMPUTE_ENV = "MOVIECHAT_FAST_COMPUTE"  # "auto" (default), "int8" or "float32"
COMPUTE_TYPES = ("int8", "float32")  # int8: weights and matmuls (4x less memory traffic); float32: exact
FORMAT_VERSION = 4  # bump when what is stored next to a conversion changes (4: the context guard)
METADATA = "moviechat_fast.json"


CACHE = ConversionCache("ctranslate2", METADATA)


def compute_choice() -> str:
    return choice_from_env(COMPUTE_ENV, COMPUTE_TYPES)


def fingerprint(files: Iterable[Path]) -> str:
    """A key that changes when any of the model's files, or the converter, changes."""
    import ctranslate2

    return files_digest(files, f"{FORMAT_VERSION}:{ctranslate2.__version__}:{compute_choice()}")


def find_converted(label: str, key: str) -> Path | None:
    """The finished conversion for these files; BackendError if converting them failed before."""
    return CACHE.find(label, key)


def convert(model, tokenizer, label: str, key: str, context_window: int) -> Path:
    """Convert an in-memory transformers model once; older conversions of the same source are removed."""
    return CACHE.make(label, key, lambda target: _convert(model, tokenizer, target, context_window),
                      lambda exc, line: f"CTranslate2 can't convert this model ({line})")


def _convert(model, tokenizer, target: Path, context_window: int) -> None:
    """Convert to int8, keep it if the quality guard passes, else convert to float32 (exact)."""
    tmp = build_dir_for(target)
    choice = compute_choice()
    meta: dict = {"context_window": context_window}
    for compute_type in COMPUTE_TYPES if choice == "auto" else (choice,):
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_as(model, tokenizer, tmp, compute_type)
        _check_vocabulary(tmp, tokenizer)
        report = quality_of(tmp, compute_type, model, tokenizer, context_window)
        meta.update(guard_metadata(report, compute_type), compute_type=compute_type)
        if choice != "auto" or compute_type == "float32" or report.passes:
            break
    (tmp / METADATA).write_text(json.dumps(meta))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_as(model, tokenizer, out: Path, compute_type: str) -> None:
    import copy

    from ctranslate2.converters import TransformersConverter

    class InMemory(TransformersConverter):
        """Converts the model already loaded (adapters merged) instead of reading it again.

        The converter changes some weights in place, so it gets a copy to work on."""

        def load_model(self, *args, **kwargs):
            return copy.deepcopy(model)

        def load_tokenizer(self, *args, **kwargs):
            return tokenizer

    # A model rebuilt from a GGUF keeps the GGUF's quantization_config, but its weights are plain
    # float32: hide the note from the converter, which refuses GGUF-quantized weights.
    quantization = getattr(model.config, "quantization_config", None)
    with tempfile.TemporaryDirectory() as config_dir:
        try:
            if quantization is not None:
                model.config.quantization_config = None
            model.config.to_json_file(os.path.join(config_dir, "config.json"))
            InMemory(config_dir).convert(str(out), quantization=compute_type, force=True)
        finally:
            if quantization is not None:
                model.config.quantization_config = quantization


def quality_of(directory: Path, compute_type: str, model, tokenizer,
               context_window: int | None = None) -> QualityReport:
    """The quality guard: how much the conversion in `directory` raises the perplexity of the
    calibration replies over the transformers model in memory (teacher-forced)."""
    from ..dialogue import format_for
    from .hf import TransformersBackend

    candidate = CT2Backend(new_generator(directory, compute_type), tokenizer, directory, compute_type, 0, {})
    try:
        return compare(TransformersBackend(lambda: model, tokenizer, 0), candidate, format_for(tokenizer),
                       context_window)
    finally:
        candidate.generator = None


def _check_vocabulary(directory: Path, tokenizer) -> None:
    """Prompts travel as token strings: each id's string must map back to that id."""
    vocabulary = json.loads((directory / "vocabulary.json").read_text())
    expected = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if vocabulary[: len(expected)] != expected or len(set(vocabulary)) != len(vocabulary):
        raise ValueError("its vocabulary does not map one to one onto the tokenizer's ids")


def open_converted(directory: Path, tokenizer) -> CT2Backend:
    meta = json.loads((directory / METADATA).read_text())
    generator = new_generator(directory, meta["compute_type"])
    return track(CT2Backend(generator, tokenizer, directory, meta["compute_type"], int(meta["context_window"]),
                            guard_figures(meta)))


def converted() -> list[dict]:
    """Every CTranslate2 copy in the cache: its folder, compute type and quality guard, or why it couldn't be made."""
    def describe(folder: Path, meta: dict) -> dict:
        compute = meta["compute_type"]
        return {"backend": f"ctranslate2-{compute}", "change_pct": meta.get(f"perplexity_change_pct_{compute}"),
                "context_change_pct": meta.get(f"context_change_pct_{compute}"),
                "note": CT2Backend(None, None, folder, compute, 0, guard_figures(meta)).note}

    return CACHE.listing(describe, "ctranslate2")
