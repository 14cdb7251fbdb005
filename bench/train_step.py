"""One training step of GPT-2 124M, taken apart: micro-batch size and the reply-only loss.

    python bench/train_step.py                       # rows 4, 8, 16; both losses; a table
    python bench/train_step.py --rows 4,8 --json --save bench/results/train_step.json

Each setting runs in a fresh process (so the peak resident memory is its own): GPT-2 124M
(random init), fp32, fused AdamW, `--steps` steps on full-width rows of `--length` tokens whose
last 20% are reply tokens (the share in the corpus), and reports tokens/s (median step) and peak RSS
for (a) the model's own loss and (b) `trainer.loss.reply_loss`. This is what the planner's CPU
micro-batch cap (trainer.memory.CPU_MICRO_TOKENS) and the reply-only loss rest on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPLY_SHARE = 0.2  # reply tokens / all tokens in the subset's training examples


def one_setting(rows: int, length: int, loss_kind: str, steps: int) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from moviechat_tui.core.dialogue import IGNORE_INDEX
    from trainer.loss import reply_loss

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    input_ids = torch.randint(0, model.config.vocab_size, (rows, length))        # (b, s)
    labels = input_ids.clone()
    labels[:, : int(length * (1 - REPLY_SHARE))] = IGNORE_INDEX                  # the prompt part
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = model(**inputs).loss if loss_kind == "own" else reply_loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    step = statistics.median(times[1:])  # the first step also allocates the optimizer state
    return {"rows": rows, "length": length, "loss": loss_kind, "steps": steps, "step_s": round(step, 3),
            "tokens_per_s": round(rows * length / step, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="4,8,16", help="micro-batch sizes, comma-separated")
    parser.add_argument("--length", type=int, default=256, help="tokens per row (default: max_length)")
    parser.add_argument("--steps", type=int, default=4, help="steps per setting (the first is not timed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("ROWS", "LOSS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    if args.one:
        print(json.dumps(one_setting(int(args.one[0]), args.length, args.one[1], args.steps)))
        return 0
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error("--rows takes comma-separated numbers, e.g. 4,8,16")
    results = []
    for n in rows:
        for kind in ("own", "reply"):  # alternating, so background load hits both alike
            done = subprocess.run([sys.executable, __file__, "--one", str(n), kind, "--length", str(args.length),
                                   "--steps", str(args.steps)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"rows {n}, {kind} loss failed:\n{done.stderr[-2000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if not args.json:
                r = results[-1]
                print(f"rows {n:>2} x {args.length}, {kind:5} loss: {r['tokens_per_s']:>6} tokens/s, "
                      f"peak {r['peak_rss_gb']} GB", flush=True)
    report = {"model": "gpt2 124M (random init)", "reply_share": REPLY_SHARE, "cpus": os.cpu_count(),
              "load_average": list(os.getloadavg()), "results": results}
    for n in rows:
        own, reply = (next(r for r in results if r["rows"] == n and r["loss"] == k) for k in ("own", "reply"))
        report.setdefault("reply_loss_speedup", {})[str(n)] = round(reply["tokens_per_s"] / own["tokens_per_s"], 2)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("reply-only loss speed-up by rows:", report["reply_loss_speedup"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
