"""Writing GGUF files for llama.cpp: a transformers model as a whole, or a LoRA adapter on its own.

llama.cpp reads models in GGUF. Two writers, both on the `gguf` package's writer and tensor-name map
(so names follow llama.cpp's own converter, convert_hf_to_gguf.py, which a pip install doesn't ship):

    write_model(model, tokenizer, path)   a transformers Llama (SmolLM2) or GPT-2 model, float32, or
                                          each tensor as `encode` packs it (llamacpp_mix.py)
    write_lora(adapter_dir, config, path) a PEFT LoRA adapter for a Llama model, applied by llama.cpp
                                          at run time on top of a base GGUF that may be quantized

Two layout details that the converter also handles: llama.cpp's rotary embedding pairs the halves
of each query/key head differently from transformers, so q_proj and k_proj rows are permuted
(`_permute_rows`; for LoRA only B's rows: W + B A permuted is W' + B' A), and GPT-2's Conv1D weights
are stored transposed. Tests compare llama.cpp's logits with transformers' (tests/test_llamacpp.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

LLAMA, GPT2 = "llama", "gpt2"
SUPPORTED = {"LlamaForCausalLM": LLAMA, "GPT2LMHeadModel": GPT2}
# PEFT adapter settings llama.cpp can't reproduce (its scale is alpha / rank, applied to A then B).
UNSUPPORTED_LORA = ("use_dora", "use_rslora", "modules_to_save")


class ExportError(Exception):
    """The model or adapter can't be written for llama.cpp; the message is one line."""


def architecture(model_config) -> str:
    for name in getattr(model_config, "architectures", None) or []:
        if name in SUPPORTED:
            return SUPPORTED[name]
    model_type = getattr(model_config, "model_type", "")
    if model_type in (LLAMA, GPT2):
        return model_type
    raise ExportError(f"llama.cpp export knows Llama and GPT-2 models, not {model_type or 'this model'!r}")


def _permute_rows(weight, n_head: int):
    """transformers' q/k row order -> llama.cpp's (the converter's LlamaModel.permute)."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _tokenizer_fields(writer, tokenizer, vocab_size: int) -> None:
    """The vocabulary llama.cpp needs to open the model. Replies never use llama.cpp's tokenizer (prompts
    travel as ids), but the file must carry one with one entry per embedding row."""
    import gguf

    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    for i in range(len(tokens), vocab_size):  # embedding rows past the tokenizer (padding)
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("merges", [])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens[:vocab_size])
    writer.add_token_types(types[:vocab_size])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    writer.add_eos_token_id(eos)
    writer.add_bos_token_id(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos)
    writer.add_add_bos_token(False)


def write_model(model, tokenizer, path: Path, encode: Callable | None = None) -> Path:
    """`model` (transformers, in memory, adapters merged) as a GGUF at `path`: float32, or each tensor
    as `encode(transformers name, float32 array in llama.cpp's layout)` returns it: (the array, "f32")
    or (packed bytes, their ggml_quant.GGML_TYPES format)."""
    import gguf
    import torch

    from . import ggml_quant

    config = model.config
    arch = architecture(config)
    gguf_arch = gguf.MODEL_ARCH.LLAMA if arch == LLAMA else gguf.MODEL_ARCH.GPT2
    n_layers = config.num_hidden_layers if arch == LLAMA else config.n_layer
    names = gguf.get_tensor_name_map(gguf_arch, n_layers)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("moviechat export")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if encode is None else gguf.LlamaFileType.GUESSED)
    if arch == LLAMA:
        n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_rope_dimension_count(getattr(config, "head_dim", None) or config.hidden_size // n_head)
        writer.add_vocab_size(config.vocab_size)
    else:
        writer.add_context_length(config.n_positions)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
    vocab_rows = model.get_input_embeddings().weight.shape[0]
    _tokenizer_fields(writer, tokenizer, vocab_rows)
    tied = bool(getattr(config, "tie_word_embeddings", True))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
                continue  # GPT-2's causal-mask buffers, Llama's rotary cache: not weights
            if name == "lm_head.weight" and tied:
                continue  # llama.cpp uses the token embeddings as the output layer
            data = tensor.detach().float().cpu()
            if arch == GPT2 and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
                data = data.t()  # Conv1D stores (in, out)
            elif arch == LLAMA and name.endswith("self_attn.q_proj.weight"):
                data = _permute_rows(data, n_head)
            elif arch == LLAMA and name.endswith("self_attn.k_proj.weight"):
                data = _permute_rows(data, n_kv)
            mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise ExportError(f"llama.cpp has no place for the tensor {name!r}")
            array, weights = (data.contiguous().numpy(), "f32")
            if encode is not None:
                array, weights = encode(name, array)
            if weights == "f32":
                writer.add_tensor(mapped, array)
            else:
                writer.add_tensor(mapped, array, raw_dtype=gguf.GGMLQuantizationType(ggml_quant.GGML_TYPES[weights]))
    _finish(writer)
    return path


def write_lora(adapter_dir: Path, model_config, path: Path) -> Path:
    """The PEFT LoRA adapter in `adapter_dir` (for a Llama model with `model_config`) as a GGUF adapter."""
    import gguf
    from safetensors.torch import load_file

    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    if settings.get("peft_type") != "LORA":
        raise ExportError(f"llama.cpp applies LoRA adapters, not {settings.get('peft_type')}")
    for key in UNSUPPORTED_LORA:
        if settings.get(key):
            raise ExportError(f"llama.cpp can't apply a LoRA adapter with {key}")
    if architecture(model_config) != LLAMA:
        raise ExportError("run-time LoRA is written for Llama models only")
    n_head, n_kv = model_config.num_attention_heads, model_config.num_key_value_heads
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model_config.num_hidden_layers)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pattern = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")
    writer = gguf.GGUFWriter(str(path), LLAMA)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(settings["lora_alpha"]))
    for key, tensor in sorted(weights.items()):
        match = pattern.match(key)
        if match is None:
            raise ExportError(f"unexpected tensor {key!r} in the adapter (only LoRA A/B on linear layers)")
        module, part = match.groups()
        data = tensor.float()
        if part == "B" and module.endswith("self_attn.q_proj"):
            data = _permute_rows(data, n_head)
        elif part == "B" and module.endswith("self_attn.k_proj"):
            data = _permute_rows(data, n_kv)
        mapped = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if mapped is None:
            raise ExportError(f"llama.cpp has no place for the adapter's {module!r}")
        writer.add_tensor(f"{mapped}.lora_{part.lower()}", data.contiguous().numpy())
    _finish(writer)
    return path


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
