"""The mixed GGUF copies: 4 bits where the model tolerates them, 8 bits where it doesn't.

Measured on the shipped model (bench/gguf_options.py, docs/benchmarks.md): the attention's query,
key and output projections and the MLP's up projection, GPTQ-rounded onto iq4_nl (gptq.py), barely
move the perplexity of everyday replies; the gate projection costs more, and the value and down projections are the
sensitive ones: they stay q8_0, like the token embeddings (also the output layer, as in the SmolLM2
GGUF). iq4_nl is a format llama.cpp repacks for AVX2, so the fewer bytes also mean faster
multiplication: decoding beats the all-q8_0 copy and the base's own q4_1 file.

PLANS, fastest first (the share of the layers' weights in 4 bits is SmolLM2-135M's):
  mix-4bit-most  q, k, o, gate and up projections in iq4_nl (72 %)
  mix-4bit-half  q, k, o and up projections in iq4_nl (47 %)
They are written only when MOVIECHAT_GGUF_WEIGHTS asks for one (llamacpp_cache.py): on the shipped
model they decode 6-20 % faster than q8_0 and keep everyday replies within the quality guard, but
lose 4-5 % on replies that use the history (bench/gguf_options.py, docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

from . import ggml_quant, gptq
from .gguf_export import write_model
from .importance import input_statistics

_HALF = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj")
PLANS = {"mix-4bit-most": (*_HALF, "mlp.gate_proj"), "mix-4bit-half": _HALF}  # weights -> modules in 4 bits


def four_bit_modules(model, plan: str) -> set[str]:
    """The Linear modules `plan` writes in 4 bits: Llama projections it names whose rows split into blocks."""
    import torch

    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.endswith(PLANS[plan])
            and module.in_features % ggml_quant.BLOCK == 0}


def write_mixed(model, tokenizer, fmt, path: Path, plan: str) -> Path | None:
    """The model at `path` with `plan`'s four_bit_modules in GPTQ iq4_nl, the other matrices in q8_0,
    vectors in f32; None when no module qualifies (GPT-2, or sizes that don't split into blocks)."""
    chosen = four_bit_modules(model, plan)
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
