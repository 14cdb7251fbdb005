"""What a run starts from: the base model (or GPT-2 from scratch), LoRA on top, and the precision."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import set_seed

from moviechat_tui.core.loading import ModelLoadError, load_model
from trainer.config import GPT2_SCRATCH, TrainConfig, TrainError


def load_base(spec: str, seed: int = 0):
    """(model, tokenizer) in train mode. `gpt2-scratch` = GPT-2 124M, randomly initialised (seeded)."""
    if spec == GPT2_SCRATCH:
        from transformers import GPT2Config, GPT2LMHeadModel

        from moviechat_tui.core.paths import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
        set_seed(seed)
        config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        return GPT2LMHeadModel(config), tokenizer
    try:
        loaded = load_model(spec, device="cpu", backend="transformers")  # training needs the torch model, not a fast copy
    except ModelLoadError as exc:
        raise TrainError(f"cannot load base {spec!r}: {exc}") from None
    model = loaded.model
    if getattr(model, "hf_quantizer", None) is not None and not any(
        p.dtype in (torch.uint8, torch.int8) for p in model.parameters()
    ):
        # The converted SmolLM2 keeps the GGUF's quantization_config although its weights are dense
        # fp32; Trainer would refuse it as "quantized". Drop the stale marker.
        model.hf_quantizer.remove_quantization_config(model)
    model.train()
    return model, loaded.tokenizer


def add_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainError(f"cannot add LoRA to {config.lora_targets!r}: {str(exc).splitlines()[0]}") from None


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(requested: str = "auto", warn=print) -> str:
    """fp32 on CPUs (bf16 only with native support), bf16 on GPUs that have it, else fp16 (loss-scaled)."""
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise TrainError(f"unknown precision {requested!r}; choose auto, fp32, bf16 or fp16")
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return "bf16" if bf16 else "fp16"
        if requested == "bf16" and not bf16:
            warn("warning: this GPU has no bf16; using fp16 mixed precision with loss scaling instead")
            return "fp16"
        return requested
    if requested == "fp16":
        warn("warning: fp16 mixed precision needs a GPU; training in fp32 on the CPU")
        return "fp32"
    if requested == "bf16" and not cpu_has_native_bf16():
        warn("warning: this CPU has no native bf16 (emulated bf16 is ~100x slower); training in fp32")
        return "fp32"
    return "fp32" if requested == "auto" else requested
