"""llama.cpp's own quantizer, one tensor at a time: `ggml_quantize_chunk` from the libggml that
llama-cpp-python ships, called through ctypes.

`llama_model_quantize` (what llamacpp_cache.quantize calls) picks one format for the whole file and
takes its importance matrix and per-tensor types only as C++ containers, out of ctypes' reach. With
this, gguf_export.write_model writes each tensor in its own format, importance-weighted
(importance.py), and the bytes are exactly those llama.cpp's quantize tool would write.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

# ggml_type values (ggml.h) of the formats moviechat writes.
GGML_TYPES = {"f32": 0, "q4_0": 2, "q8_0": 8, "iq4_nl": 20}
BLOCK = 32  # values per block in each of them: a row's length must be a multiple of it


@lru_cache(maxsize=1)
def _ggml():
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    found = sorted(folder.glob("libggml-base.so")) or sorted(folder.glob("*ggml-base.*"))  # .so, .dylib, .dll
    if not found:
        raise OSError(f"no ggml-base library in {folder}")
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def can_quantize(shape: tuple[int, ...]) -> bool:
    """A 2-D weight whose rows split into whole blocks."""
    return len(shape) == 2 and shape[1] % BLOCK == 0


def quantize(weight, weights: str, importance=None):
    """`weight` (rows, n) float32 numpy -> (rows, bytes per row) uint8 in llama.cpp's `weights` format.
    `importance` (n,) weighs each column's rounding error (None: every column alike)."""
    import numpy as np

    kind = GGML_TYPES[weights]
    data = np.ascontiguousarray(weight, dtype=np.float32)
    rows, n = data.shape
    if not can_quantize(data.shape):
        raise ValueError(f"a row of {n} values doesn't split into blocks of {BLOCK}")
    lib = _ggml()
    lib.ggml_quantize_init(kind)
    row_bytes = lib.ggml_row_size(kind, n)
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    imatrix = None if importance is None else np.ascontiguousarray(importance, dtype=np.float32)
    if imatrix is not None and imatrix.shape != (n,):
        raise ValueError(f"importance has {imatrix.shape} values for rows of {n}")
    written = lib.ggml_quantize_chunk(kind, data.ctypes.data, out.ctypes.data, 0, rows, n,
                                      None if imatrix is None else imatrix.ctypes.data)
    assert written == out.nbytes, (written, out.nbytes)
    return out


def dequantize(packed, weights: str):
    """The float32 values a quantized (rows, bytes per row) tensor stands for (gguf's reader)."""
    import gguf

    rows = packed.shape[0]
    return gguf.quants.dequantize(packed, gguf.GGMLQuantizationType(GGML_TYPES[weights])).reshape(rows, -1)
