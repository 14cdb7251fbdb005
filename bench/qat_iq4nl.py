"""Can training make a 4-bit copy keep the history? Quantization-aware distillation, measured.

    python bench/qat_iq4nl.py --steps 90 --lr-levels 0 --lr-scales 2e-3 --save bench/results/qat-iq4nl.json

Issue 12 asks for decoding at llama.cpp's q4_1 speed; the 4-bit copies that reach it lose the use of
the history (docs/benchmarks.md). The way that remains is to train with the 4-bit weights in the loop,
so this script tries it on the shipped model, every projection in iq4_nl (the fastest format,
1.18x the base q4_1 file in bench/gguf_options.py):

  student  each projection's weights as (level, block scale) pairs on llama.cpp's iq4_nl grid,
           started from GPTQ (backends/gptq.py) with the app's own calibration statistics
  teacher  the shipped model, adapter merged, fp32 (what the quality guard compares against)
  loss     KL(teacher || student) at the reply tokens of the training mix the adapter was trained on
           (its moviechat_run.json settings), batches of 8
  learns   the levels (in units of the starting scale, through a straight-through estimator: the
           forward pass rounds to the nearest level, the gradient passes as if it didn't) and each
           block's log-scale; --lr-levels 0 keeps the levels and trains the scales alone

Every --eval-every steps the student is measured by the quality guard in torch (quality.compare: the
everyday and the history replies, against the teacher): the same two figures llamacpp_cache keeps a
copy by (at most +2 % each). Step times are wall seconds on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def iq4_nl_student(teacher, fmt):
    """A copy of `teacher` whose projections are IQ4Linear modules started from GPTQ."""
    import numpy as np
    import torch

    from moviechat_tui.core.backends import gptq
    from moviechat_tui.core.backends.ggml_quant import BLOCK
    from moviechat_tui.core.backends.importance import input_statistics

    names = {n for n, m in teacher.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(PROJECTIONS)}
    statistics = input_statistics(teacher, fmt, lambda name: name in names)
    student = copy.deepcopy(teacher)
    for name in sorted(names):
        weight = student.get_submodule(name).weight.detach().numpy()
        importance, second_moment = statistics[name]
        rows, n = weight.shape
        blocks = gptq.quantize_iq4_nl(weight, second_moment, importance).reshape(rows, n // BLOCK, -1)
        scales = torch.from_numpy(blocks[:, :, :2].copy().view(np.float16).astype(np.float32)[:, :, 0])  # (rows, n/32)
        nibbles = blocks[:, :, 2:]  # element j in the low nibble, j + 16 in the high one
        codes = torch.from_numpy(np.concatenate([nibbles & 15, nibbles >> 4], -1).reshape(rows, n).astype(np.int64))
        parent, child = name.rsplit(".", 1)
        setattr(student.get_submodule(parent), child, IQ4Linear(codes, scales))
    return student


def _iq4_module():
    import gguf
    import torch
    import torch.nn.functional as F

    levels = torch.tensor(gguf.quants.IQ4_NL.kvalues, dtype=torch.float32)  # ascending, -127..113
    midpoints = (levels[1:] + levels[:-1]) / 2

    class IQ4Linear(torch.nn.Module):
        """A bias-free projection whose weights are fp16(scale) x level, per block of 32 inputs.
        `levels_u` holds each weight in units of its block's starting scale (init: its level), `log_scale`
        each block's change of scale (init 0), so that one Adam step is the same share of a level gap
        everywhere."""

        def __init__(self, codes, scales) -> None:
            super().__init__()
            self.register_buffer("start_scale", scales.clone())          # (rows, blocks)
            self.levels_u = torch.nn.Parameter(levels[codes].clone())     # (rows, n)
            self.log_scale = torch.nn.Parameter(torch.zeros_like(scales))  # (rows, blocks)

        def quantized(self):
            rows, n = self.levels_u.shape
            u = self.levels_u.view(rows, n // 32, 32)
            scale = (self.start_scale * torch.exp(self.log_scale)).unsqueeze(-1)
            scale = scale + (scale.half().float() - scale).detach()  # stored as fp16 in the GGUF
            v = u * torch.exp(-self.log_scale).unsqueeze(-1)
            rounded = v + (levels[torch.bucketize(v.detach(), midpoints)] - v).detach()  # straight through
            return (scale * rounded).view(rows, n)

        def forward(self, x):
            return F.linear(x, self.quantized())

    return IQ4Linear


IQ4Linear = _iq4_module()


class _Scorer:
    """What quality.compare needs of a model: logits(ids)."""

    def __init__(self, model) -> None:
        self.model = model

    def logits(self, ids):
        import torch

        with torch.inference_mode():
            return self.model(torch.tensor([list(ids)])).logits[0].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--run", type=Path, default=ROOT / "moviechat_tui/assets/models/default/moviechat_run.json",
                        help="the training run whose data settings the distillation uses")
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared/data/cornell-subset"))
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr-levels", type=float, default=0.0, help="Adam lr of the levels, in level units (0: frozen)")
    parser.add_argument("--lr-scales", type=float, default=2e-3, help="Adam lr of each block's log-scale")
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from moviechat_tui.core.backends.quality import compare
    from moviechat_tui.core.dialogue import IGNORE_INDEX, format_for
    from moviechat_tui.core.loading import load_model
    from trainer.batching import Collator
    from trainer.corpus import load_corpus
    from trainer.dataset import build_examples
    from trainer.loss import reply_logits

    torch.manual_seed(args.seed)
    loaded = load_model(args.model, backend="transformers")
    teacher, tokenizer = loaded.model.eval(), loaded.tokenizer
    teacher.requires_grad_(False)
    fmt = format_for(tokenizer)
    started = time.perf_counter()
    student = iq4_nl_student(teacher, fmt)
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "gptq_seconds": time.perf_counter() - started, "guard": []}

    def save() -> None:  # after every measurement: a run stopped late keeps what it measured
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps(result, indent=1) + "\n")

    def guard(step: int) -> None:
        student.eval()
        report = compare(_Scorer(teacher), _Scorer(student), fmt)
        student.train()
        row = {"step": step, "everyday_pct": report.change_pct, "history_pct": report.context_change_pct,
               "next_token_agreement": report.next_token_agreement}
        result["guard"].append(row)
        print(f"step {step}: everyday {row['everyday_pct']:+.2f} %, history {row['history_pct']:+.2f} %, "
              f"agreement {row['next_token_agreement']:.3f}", flush=True)
        save()

    guard(0)
    settings = json.loads(args.run.read_text())["settings"]  # the adapter's own training mix
    data = build_examples(load_corpus(args.corpus), tokenizer, "train",
                          max_length=settings["max_length"], genres=settings["genres"], persona=settings["persona"],
                          persona_dropout=settings["persona_dropout"], recall_share=settings["recall_share"],
                          length_balance=settings["length_balance"])
    order = list(range(len(data)))
    random.Random(args.seed).shuffle(order)
    collate = Collator(tokenizer.pad_token_id)

    modules = [m for m in student.modules() if isinstance(m, IQ4Linear)]
    student.requires_grad_(False)
    groups = [{"params": [m.log_scale for m in modules], "lr": args.lr_scales}]
    if args.lr_levels:
        groups.append({"params": [m.levels_u for m in modules], "lr": args.lr_levels})
    for group in groups:
        for parameter in group["params"]:
            parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # 10 steps of warm-up, then cosine to 0
        optimizer, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    student.train()
    step_seconds = []
    for step in range(args.steps):
        tick = time.perf_counter()
        batch = collate([data[i] for i in order[step * args.batch:(step + 1) * args.batch]])
        keep = batch["labels"][:, 1:] != IGNORE_INDEX                                  # (b, s-1)
        with torch.no_grad():
            target = reply_logits(teacher, batch["input_ids"], batch["attention_mask"], keep)  # (n, V)
        logits = reply_logits(student, batch["input_ids"], batch["attention_mask"], keep)     # (n, V)
        loss = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(target, -1), log_target=True,
                        reduction="sum") / keep.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step_seconds.append(time.perf_counter() - tick)
        if step % 10 == 0:
            print(f"step {step}: KL {loss.item():.4f} nats/token, {step_seconds[-1]:.1f} s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            guard(step + 1)
    result["step_seconds_median"] = sorted(step_seconds)[len(step_seconds) // 2] if step_seconds else None
    save()


if __name__ == "__main__":
    main()
