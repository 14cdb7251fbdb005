"""The 16 GB constraint as a feature: pick micro-batch, accumulation and checkpointing for a memory budget.

Peak memory of a training step is estimated as

    runtime     fixed cost of the process (torch, python, the tokenized data)
  + weights     every parameter in fp32 (mixed precision keeps fp32 master weights)
  + grads       one fp32 gradient per trainable parameter
  + optimizer   AdamW: two fp32 moments per trainable parameter
  + activations per micro-batch: what backward needs kept, per layer, plus the logits

Activations per layer follow Korthikanti et al. (2022), "Reducing Activation
Recomputation in Large Transformer Models": about s*b*h*(34 + 5*a*s/h) bytes in
16-bit, doubled in fp32. With gradient checkpointing only each layer's input is
kept, plus one layer's worth while it is recomputed. The logits (b*s*V) are kept
in fp32 several times over (logits, softmax, their gradient), which dominates for
small models with big vocabularies.

The planner takes the largest micro-batch that divides the effective batch and
fits; it turns gradient checkpointing on only when no micro-batch fits without it.
On a CPU it also keeps micro-batches to CPU_MICRO_TOKENS tokens: two cores are
saturated by much smaller matmuls than a GPU, so bigger micro-batches buy little
speed there and cost a lot of memory (GPT-2 124M, 256-token rows, bench/train_step.py:
4 rows 120 tokens/s at 5.4 GB, 8 rows 158 tokens/s at 7.7 GB, 16 rows 117 tokens/s
at 10.1 GB); 4 rows keep the full fine-tune's worst case under 6 GB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GB = 1024**3
DEFAULT_BUDGET = "16GB"
RUNTIME_BYTES = int(0.6 * GB)  # torch + python + tokenizer + data, measured on CPU (docs/training.md)
LOGIT_COPIES = 4  # logits, their fp32 upcast, log-softmax, and its gradient
CPU_MICRO_TOKENS = 1024  # micro-batch rows x max_length on a CPU (see the module docstring)


class MemoryBudgetError(Exception):
    """A budget too small for even one example per step (one line)."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model."""

    n_params: int
    n_trainable: int
    n_layers: int
    hidden: int
    n_heads: int
    vocab: int

    @classmethod
    def of(cls, model) -> "ModelShape":
        config = model.config
        get = lambda *names: next(getattr(config, n) for n in names if getattr(config, n, None) is not None)  # noqa: E731
        return cls(
            n_params=sum(p.numel() for p in model.parameters()),
            n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
            n_layers=int(get("num_hidden_layers", "n_layer")),
            hidden=int(get("hidden_size", "n_embd")),
            n_heads=int(get("num_attention_heads", "n_head")),
            vocab=int(get("vocab_size")),
        )


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int
    grad_accumulation: int
    gradient_checkpointing: bool
    estimated_bytes: int
    budget_bytes: int
    parts: dict  # name -> bytes, for the report

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / GB:.2f}" for name, value in self.parts.items())
        return (
            f"memory plan: micro-batch {self.micro_batch} x {self.grad_accumulation} accumulation steps, "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}; "
            f"estimated peak {self.estimated_bytes / GB:.2f} GB of {self.budget_bytes / GB:.2f} GB ({parts} GB)"
        )


def parse_bytes(text: str | int | float) -> int:
    """'16GB', '16G', '512MB', '1.5 GiB' or a number of bytes -> bytes (binary units)."""
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise MemoryBudgetError(f"cannot read memory size {text!r}; write it like 16GB or 512MB")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * 1024 ** " kmgt".index(unit or " "))


def estimate_bytes(shape: ModelShape, micro_batch: int, seq_len: int, checkpointing: bool,
                   activation_bytes: int = 4, runtime_bytes: int = RUNTIME_BYTES) -> dict[str, int]:
    """The estimate's parts for one micro-batch (see the module docstring)."""
    b, s, h, a = micro_batch, seq_len, shape.hidden, shape.n_heads
    scale = activation_bytes / 2  # the paper's constants are for 16-bit activations
    per_layer = int(s * b * h * (34 + 5 * a * s / h) * scale)
    if checkpointing:
        layers = shape.n_layers * s * b * h * activation_bytes + per_layer
    else:
        layers = shape.n_layers * per_layer
    return {
        "runtime": runtime_bytes,
        "weights": shape.n_params * 4,
        "grads": shape.n_trainable * 4,
        "optimizer": shape.n_trainable * 8,
        "activations": layers + LOGIT_COPIES * b * s * shape.vocab * 4,
    }


def plan_memory(shape: ModelShape, effective_batch: int, seq_len: int, budget: str | int = DEFAULT_BUDGET,
                activation_bytes: int = 4, micro_batch: int | None = None,
                checkpointing: bool | None = None, runtime_bytes: int = RUNTIME_BYTES,
                max_micro_tokens: int | None = None) -> MemoryPlan:
    """The largest micro-batch dividing `effective_batch` whose estimated peak fits `budget`.

    `micro_batch` / `checkpointing` pin a choice instead of searching (it must still fit).
    `max_micro_tokens` caps micro-batch x seq_len (a CPU gains nothing from bigger ones);
    a single row is always allowed.
    """
    if effective_batch < 1 or seq_len < 1:
        raise MemoryBudgetError("the effective batch and the sequence length must be at least 1")
    budget_bytes = parse_bytes(budget)
    sizes = [micro_batch] if micro_batch else [d for d in range(effective_batch, 0, -1) if effective_batch % d == 0
                                               and (max_micro_tokens is None or d == 1 or d * seq_len <= max_micro_tokens)]
    if micro_batch and effective_batch % micro_batch:
        raise MemoryBudgetError(f"--micro-batch {micro_batch} does not divide the effective batch {effective_batch}")
    modes = [checkpointing] if checkpointing is not None else [False, True]
    for mode in modes:  # checkpointing costs ~30% more compute: only when nothing fits without it
        for size in sizes:
            parts = estimate_bytes(shape, size, seq_len, mode, activation_bytes, runtime_bytes)
            total = sum(parts.values())
            if total <= budget_bytes:
                return MemoryPlan(size, effective_batch // size, mode, total, budget_bytes, parts)
    smallest = sum(estimate_bytes(shape, sizes[-1], seq_len, modes[-1], activation_bytes, runtime_bytes).values())
    raise MemoryBudgetError(
        f"a memory budget of {budget_bytes / GB:.2f} GB is too small: even micro-batch {sizes[-1]} "
        f"with{'' if modes[-1] else 'out'} gradient checkpointing needs about {smallest / GB:.2f} GB "
        f"(try LoRA, a shorter --max-length, or a bigger --max-memory)"
    )
