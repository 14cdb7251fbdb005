"""4-bit weights that keep the layer's output, not each weight: GPTQ rounding onto llama.cpp's iq4_nl grid.

Rounding every weight to its nearest 4-bit value (what llama.cpp's quantizer does, importance
matrix or not) raised the shipped model's reply perplexity by ~10 %; for a 135M model that is
too much (docs/benchmarks.md). GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers") rounds one input column at a time and
moves the rounding error onto the columns not yet rounded, weighted by the inverse of the
inputs' second moment H = E[x x^T], so that W x, not W, stays close: the layer's output error
on the calibration inputs is what it minimises.

The scale of each block of 32 is the one llama.cpp's own iq4_nl quantizer picks (with the
importance matrix); only the choice among its 16 values changes. The bytes are then exactly an
iq4_nl tensor, which llama.cpp repacks for AVX2 and multiplies faster than q8_0.
"""

from __future__ import annotations

from . import ggml_quant

DAMPING = 0.3  # added to H's diagonal, as a share of its mean: steadies H estimated from few tokens
COLUMNS_PER_STEP = 128  # GPTQ's "lazy batch": errors reach later columns in blocks of this size


def quantize_iq4_nl(weight, hessian, importance=None):
    """`weight` (rows, n) float32 numpy, `hessian` (n, n) E[x x^T] of its input -> (rows, bytes per row)
    uint8, an iq4_nl tensor."""
    import gguf
    import numpy as np
    import torch

    rows, n = weight.shape
    packed = ggml_quant.quantize(weight, "iq4_nl", importance)  # llama.cpp's scales (and a fallback)
    blocks = packed.reshape(rows, n // ggml_quant.BLOCK, -1)  # (rows, blocks, 2 + 16): fp16 scale, nibbles
    scales = torch.from_numpy(blocks[:, :, :2].copy().view(np.float16).astype(np.float32)[:, :, 0])
    levels = torch.tensor(gguf.quants.IQ4_NL.kvalues, dtype=torch.float32)  # ascending
    midpoints = (levels[1:] + levels[:-1]) / 2  # nearest level of v: how many midpoints lie below v
    divisors = torch.where(scales == 0, torch.ones_like(scales), scales)  # a zero scale rounds all to 0

    w = torch.from_numpy(np.array(weight, dtype=np.float32))
    h = torch.as_tensor(hessian, dtype=torch.float64).clone()
    dead = torch.diag(h) == 0  # inputs that were always zero: their weights don't matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMPING * torch.diag(h).mean() * torch.eye(n, dtype=torch.float64)
    # Upper Cholesky factor of H^-1: row c holds how column c's error spreads onto later columns.
    spread = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()

    index = torch.empty((rows, n), dtype=torch.uint8)
    for start in range(0, n, COLUMNS_PER_STEP):
        stop = min(start + COLUMNS_PER_STEP, n)
        part = w[:, start:stop].clone()
        errors = torch.empty_like(part)
        for i in range(stop - start):
            column = start + i
            block = column // ggml_quant.BLOCK
            choice = torch.bucketize(part[:, i] / divisors[:, block], midpoints)  # (rows,) in 0..15
            rounded = scales[:, block] * levels[choice]
            index[:, column] = choice.to(torch.uint8)
            error = (part[:, i] - rounded) / spread[column, column]
            part[:, i:] -= error[:, None] * spread[column, column:stop][None, :]
            errors[:, i] = error
        w[:, stop:] -= errors @ spread[start:stop, stop:]

    nibbles = index.numpy().reshape(rows, n // ggml_quant.BLOCK, 2, 16)  # element j, j + 16 share a byte
    blocks[:, :, 2:] = nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)
    return packed
