"""The mixed GGUF copy: 4 bits where the model tolerates them, 8 bits where it doesn't.

Measured on the shipped model (bench/gguf_options.py, docs/benchmarks.md): the attention's query,
key and output projections and the MLP's gate and up projections, GPTQ-rounded onto iq4_nl
(gptq.py), barely move reply perplexity; the value and down projections are the sensitive ones and
stay q8_0, like the token embeddings (also the output layer, as in the SmolLM2 GGUF). About two
thirds of the weights then take half the bytes, and iq4_nl is a format llama.cpp repacks for AVX2:
decoding is faster than on the all-q8_0 copy and on the base's own q4_1 file.

The quality guard still decides: llamacpp_cache keeps this copy only while it raises reply
perplexity by at most quality.QUALITY_LIMIT_PCT, else it tries q8_0.
"""

from __future__ import annotations

from pathlib import Path

from . import ggml_quant, gptq
from .gguf_export import write_model
from .importance import input_statistics

WEIGHTS = "q8_0+iq4_nl"
FOUR_BIT = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj")


def four_bit_modules(model) -> set[str]:
    """The Linear modules this copy writes in 4 bits: Llama's FOUR_BIT projections whose rows split into blocks."""
    import torch

    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.endswith(FOUR_BIT)
            and module.in_features % ggml_quant.BLOCK == 0}


def write_mixed(model, tokenizer, fmt, path: Path) -> Path | None:
    """The model at `path` with four_bit_modules in GPTQ iq4_nl, the other matrices in q8_0, vectors
    in f32; None when no module qualifies (GPT-2, or sizes that don't split into blocks)."""
    chosen = four_bit_modules(model)
    if not chosen:
        return None
    statistics = input_statistics(model, fmt, lambda name: name in chosen)

    def encode(name: str, array):
        module = name.rsplit(".", 1)[0]
        if module in chosen:
            importance, second_moment = statistics[module]
            return gptq.quantize_iq4_nl(array, second_moment, importance), "iq4_nl"
        if ggml_quant.can_quantize(array.shape):
            return ggml_quant.quantize(array, "q8_0"), "q8_0"
        return array, "f32"

    return write_model(model, tokenizer, path, encode)
