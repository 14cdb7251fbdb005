"""bench/qat_iq4nl.py's student: it starts exactly at GPTQ's iq4_nl values and the rounding lets gradients through."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import qat_iq4nl  # noqa: E402
from moviechat_tui.core.backends import ggml_quant, gptq  # noqa: E402
from moviechat_tui.core.backends.importance import input_statistics  # noqa: E402
from moviechat_tui.core.dialogue import format_for  # noqa: E402
from test_llamacpp import IDS, _tiny_llama  # noqa: E402


def test_the_student_starts_at_gptq_and_learns_through_the_rounding(gpt2_tokenizer):
    teacher = _tiny_llama(gpt2_tokenizer, tie=True, seed=3)
    fmt = format_for(gpt2_tokenizer)
    student = qat_iq4nl.iq4_nl_student(teacher, fmt)
    swapped = {n for n, m in student.named_modules() if isinstance(m, qat_iq4nl.IQ4Linear)}
    assert len(swapped) == 2 * 7  # every projection of both layers; embeddings and norms as they were

    name = "model.layers.1.mlp.down_proj"
    statistics = input_statistics(teacher, fmt, lambda n: n == name)
    importance, second_moment = statistics[name]
    weight = teacher.get_submodule(name).weight.detach().numpy()
    expected = ggml_quant.dequantize(gptq.quantize_iq4_nl(weight, second_moment, importance), "iq4_nl")
    module = student.get_submodule(name)
    assert torch.equal(module.quantized().detach(), torch.from_numpy(np.ascontiguousarray(expected)))

    # A loss on the output reaches both the levels and the scales, although the forward pass rounds.
    student.train()
    student(torch.tensor([IDS])).logits.pow(2).mean().backward()
    assert module.levels_u.grad.abs().sum() > 0 and module.log_scale.grad.abs().sum() > 0
