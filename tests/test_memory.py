"""The memory planner: micro-batch, accumulation and checkpointing for a budget."""

from __future__ import annotations

import pytest

from trainer.memory import GB, MemoryBudgetError, ModelShape, estimate_bytes, parse_bytes, plan_memory

GPT2_124M = ModelShape(n_params=124_439_808, n_trainable=124_439_808, n_layers=12, hidden=768, n_heads=12, vocab=50257)


def total(micro: int, checkpointing: bool, seq: int = 256) -> int:
    return sum(estimate_bytes(GPT2_124M, micro, seq, checkpointing).values())


def test_the_largest_micro_batch_that_fits_without_checkpointing():
    plan = plan_memory(GPT2_124M, effective_batch=32, seq_len=256, budget="16GB")
    assert plan.micro_batch * plan.grad_accumulation == 32
    assert plan.estimated_bytes <= 16 * GB and not plan.gradient_checkpointing
    assert total(plan.micro_batch, False) <= 16 * GB
    bigger = [d for d in (2, 4, 8, 16, 32) if d > plan.micro_batch]
    assert all(total(d, False) > 16 * GB for d in bigger)  # the next divisor up would not fit


def test_a_smaller_budget_means_more_accumulation_then_checkpointing():
    roomy = plan_memory(GPT2_124M, 32, 256, "16GB")
    tight = plan_memory(GPT2_124M, 32, 256, "4GB")
    assert tight.micro_batch < roomy.micro_batch and tight.grad_accumulation > roomy.grad_accumulation
    assert not tight.gradient_checkpointing
    # Between "batch 1 without checkpointing" and "batch 1 with it": only checkpointing fits.
    budget = (total(1, False) + total(1, True)) // 2
    plan = plan_memory(GPT2_124M, 32, 256, budget)
    assert plan.gradient_checkpointing and plan.estimated_bytes <= budget
    assert total(1, True) < total(1, False)


def test_too_small_for_batch_one_is_a_one_line_error():
    with pytest.raises(MemoryBudgetError, match="too small") as info:
        plan_memory(GPT2_124M, 32, 256, total(1, True) - 1)
    assert "\n" not in str(info.value)


def test_lora_and_half_precision_need_less():
    lora = ModelShape(**{**GPT2_124M.__dict__, "n_trainable": 800_000})
    full = sum(estimate_bytes(GPT2_124M, 4, 256, False).values())
    assert sum(estimate_bytes(lora, 4, 256, False).values()) < full - 1.3 * GB  # no Adam state for frozen weights
    assert sum(estimate_bytes(GPT2_124M, 4, 256, False, activation_bytes=2).values()) < full


def test_pinned_choices_and_sizes():
    plan = plan_memory(GPT2_124M, 8, 128, "16GB", micro_batch=2, checkpointing=True)
    assert (plan.micro_batch, plan.grad_accumulation, plan.gradient_checkpointing) == (2, 4, True)
    with pytest.raises(MemoryBudgetError, match="does not divide"):
        plan_memory(GPT2_124M, 8, 128, "16GB", micro_batch=3)
    assert parse_bytes("16GB") == 16 * GB and parse_bytes("512MB") == 512 * 1024**2 and parse_bytes("1.5 GiB") == int(1.5 * GB)
    with pytest.raises(MemoryBudgetError, match="16GB"):
        parse_bytes("lots")


def test_cpu_token_cap_keeps_micro_batches_small_but_never_below_one_row():
    free = plan_memory(GPT2_124M, 16, 256, "64GB")
    capped = plan_memory(GPT2_124M, 16, 256, "64GB", max_micro_tokens=1024)
    assert free.micro_batch == 16 and (capped.micro_batch, capped.grad_accumulation) == (4, 4)
    assert capped.estimated_bytes < free.estimated_bytes
    assert plan_memory(GPT2_124M, 16, 2048, "64GB", max_micro_tokens=1024).micro_batch == 1  # longer than the cap
