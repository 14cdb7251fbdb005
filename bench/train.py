"""Training benchmark: moviechat-train's defaults against a plain transformers Trainer.

    python bench/train.py                                        # small model and GPT-2 124M, text report
    python bench/train.py --models small --tokens small=200000 --json
    python bench/train.py --save bench/results/train.json

For each model, from the same initial weights (same seed), on the same training examples
(trainer.dataset: the shared dialogue format, genres, max_length 256, labels only on replies) and
for the same budget of real (non-padding) training tokens:
  (a) baseline: transformers `Trainer` as it comes: random batches padded to max_length, the
      model's own loss; the same effective batch, micro-batch, learning rate, warm-up and
      cosine schedule as (b).
  (b) moviechat-train: `trainer.train.train` at its defaults (length-bucketed batches, the loss
      at reply tokens only, the memory planner's micro-batch, the largest batch first).
Each arm runs in a fresh process, so its peak resident memory is its own. Reported per arm:
real tokens/s by the wall clock and by CPU time (what the run costs on an otherwise idle
machine: CPU seconds / threads), peak resident memory, and the validation loss (mean over the
reply tokens of the same fixed validation examples) once the budget is spent; then (b)/(a).

Models: `small` (GPT-2 shape, 4 layers x 256, random init) and `gpt2` (the GPT-2 124M
architecture, random init: `gpt2-scratch`; no pretrained weights are reachable here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "cornell-subset"
MODELS = ("small", "gpt2")
DEFAULT_TOKENS = {"small": 60_000, "gpt2": 12_000}  # real training tokens per arm
VALIDATION_EXAMPLES = 300
TARGETS = {"tokens_per_s_ratio": 2.0, "gpt2_peak_memory_gb": 6.0}
GB = 1024**3


# --- one arm, in its own process ------------------------------------------------------


class TokenBudget(TrainerCallback):
    """Stops training once `budget` real tokens were seen; times the steps and reads the peak memory."""

    def __init__(self, budget: int) -> None:
        self.budget, self.result = budget, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        if state.num_input_tokens_seen >= self.budget and not self.result:
            wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
            self.result = {
                "steps": state.global_step,
                "real_tokens": int(state.num_input_tokens_seen),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "threads": torch.get_num_threads(),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, 3),
            }
            control.should_training_stop = True
        return control


def validation_loss(model, examples, pad_id: int) -> float:
    """Mean cross-entropy over all reply tokens of `examples` (token-weighted, not batch-averaged)."""
    from trainer.evaluate import reply_nll

    model.eval()
    total, count = reply_nll(model, examples, batch_size=8, pad_id=pad_id)
    return total / count


def run_arm(arm: str, base: str, corpus_dir: str, budget: int, seed: int = 0) -> dict:
    from transformers import Trainer, TrainingArguments

    from trainer.config import TrainConfig
    from trainer.corpus import load_corpus
    from trainer.dataset import Collator, build_examples
    from trainer.memory import CPU_MICRO_TOKENS, ModelShape, plan_memory
    from trainer.train import _eval_subset, load_base, train

    config = TrainConfig(base=base, corpus=corpus_dir, seed=seed, progress=False, patience=0)
    corpus = load_corpus(corpus_dir)
    model, tokenizer = load_base(base, seed)
    data = dict(max_length=config.max_length, genres=config.genres, ratios=config.ratios, salt=config.salt)
    train_set = build_examples(corpus, tokenizer, "train", **data)
    validation = _eval_subset(build_examples(corpus, tokenizer, "validation", **data), VALIDATION_EXAMPLES, 0)
    # The same schedule for both arms: sized so that the budget ends it (cosine to ~0 at the end).
    mean_tokens = train_set.n_tokens / len(train_set)
    max_steps = math.ceil(budget / (mean_tokens * config.batch_size) * 1.05) + 1
    budget_callback = TokenBudget(budget)

    if arm == "moviechat":
        with tempfile.TemporaryDirectory() as out:
            del model  # train() loads the base itself, by the same function and seed
            config.out, config.max_steps = out, max_steps
            config.eval_steps, config.eval_examples = 10**9, 1  # no evaluations or checkpoints inside the timing
            result = train(config, log=lambda *a, **k: None, callbacks=[budget_callback])
            model = result.model
            plan = result.metadata["memory_plan"]
    else:
        plan_ = plan_memory(ModelShape.of(model), config.batch_size, config.max_length, config.max_memory,
                            max_micro_tokens=None if torch.cuda.is_available() else CPU_MICRO_TOKENS)
        plan = {"micro_batch": plan_.micro_batch, "grad_accumulation": plan_.grad_accumulation,
                "gradient_checkpointing": plan_.gradient_checkpointing}
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=plan_.micro_batch,
                gradient_accumulation_steps=plan_.grad_accumulation, learning_rate=config.lr,
                weight_decay=config.weight_decay, warmup_steps=int(config.warmup_ratio * max_steps),
                lr_scheduler_type="cosine", max_steps=max_steps, save_strategy="no", eval_strategy="no",
                logging_steps=10**9, include_num_input_tokens_seen="non_padding", seed=seed, data_seed=seed,
                report_to="none", disable_tqdm=True, remove_unused_columns=False,
                use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
            )
            # pad_to_multiple_of=max_length: every batch is padded to max_length (the classic recipe)
            trainer = Trainer(model=model, args=args, train_dataset=train_set,
                              data_collator=Collator(train_set.pad_id, pad_to_multiple_of=config.max_length),
                              callbacks=[budget_callback])
            trainer.train()
    if not budget_callback.result:
        raise SystemExit(f"{arm}: the run ended before its token budget ({budget})")
    return {**budget_callback.result, "plan": plan, "validation_loss": round(validation_loss(model, validation, train_set.pad_id), 4),
            "real_tokens_per_s": round(budget_callback.result["real_tokens"] / budget_callback.result["wall_s"], 1),
            "cpu_real_tokens_per_s": round(budget_callback.result["real_tokens"] * budget_callback.result["threads"]
                                           / budget_callback.result["cpu_s"], 1)}


# --- the comparison --------------------------------------------------------------------


def small_base(directory: Path, seed: int = 0) -> str:
    """A 4-layer GPT-2 (random init, GPT-2 tokenizer) saved as a model dir: loads like any spec."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from moviechat_tui.core.paths import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=4, n_embd=256, n_head=4,
                                       bos_token_id=eos, eos_token_id=eos, pad_token_id=eos))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_start": list(os.getloadavg())}


def compare(models, corpus: str, tokens: dict, log, seed: int = 0) -> dict:
    report = {"corpus": corpus, "seed": seed, "machine": machine(), "targets": TARGETS, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in models:
            base = small_base(Path(scratch) / "small") if name == "small" else "gpt2-scratch"
            arms = {}
            for arm in ("baseline", "moviechat"):
                log(f"{name}: {arm} ({tokens[name]:,} real tokens) ...")
                command = [sys.executable, __file__, "--arm", arm, "--base", base, "--corpus", corpus,
                           "--budget", str(tokens[name]), "--seed", str(seed)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name}/{arm} failed:\n{done.stderr[-3000:]}")
                arms[arm] = json.loads(done.stdout.strip().splitlines()[-1])
                log(f"  {arms[arm]['real_tokens_per_s']} real tokens/s, peak {arms[arm]['peak_rss_gb']} GB, "
                    f"validation loss {arms[arm]['validation_loss']}")
            a, b = arms["baseline"], arms["moviechat"]
            report["models"][name] = {
                "base": base if name != "small" else "gpt2 4x256 (random init)",
                "budget_tokens": tokens[name], **arms,
                "tokens_per_s_ratio": round(b["real_tokens_per_s"] / a["real_tokens_per_s"], 2),
                "cpu_tokens_per_s_ratio": round(b["cpu_real_tokens_per_s"] / a["cpu_real_tokens_per_s"], 2),
                "peak_memory_ratio": round(b["peak_rss_gb"] / a["peak_rss_gb"], 2),
                "validation_loss_delta": round(b["validation_loss"] - a["validation_loss"], 4),
            }
    report["machine"]["load_average_end"] = list(os.getloadavg())
    return report


def table(report: dict) -> str:
    rows = [f"{'model':6} {'arm':10} {'tokens':>8} {'steps':>5} {'tok/s':>7} {'cpu tok/s':>9} {'peak GB':>7} {'val loss':>8}"]
    for name, r in report["models"].items():
        for arm in ("baseline", "moviechat"):
            x = r[arm]
            rows.append(f"{name:6} {arm:10} {x['real_tokens']:>8} {x['steps']:>5} {x['real_tokens_per_s']:>7} "
                        f"{x['cpu_real_tokens_per_s']:>9} {x['peak_rss_gb']:>7} {x['validation_loss']:>8}")
        rows.append(f"{name:6} {'(b)/(a)':10} {'':>8} {'':>5} {r['tokens_per_s_ratio']:>6}x {r['cpu_tokens_per_s_ratio']:>8}x "
                    f"{r['peak_memory_ratio']:>6}x {r['validation_loss_delta']:>+8}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: small, gpt2")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--tokens", default="", help="budgets, e.g. small=150000,gpt2=12000")
    parser.add_argument("--seed", type=int, default=0, help="data order and dropout (and gpt2's random init); the validation examples stay")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--save", type=Path, help="also write the JSON report here")
    parser.add_argument("--arm", choices=("baseline", "moviechat"), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.arm:  # a worker: one arm, one JSON line
        print(json.dumps(run_arm(args.arm, args.base, args.corpus, args.budget, args.seed)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if not Path(args.corpus).exists():
        parser.error(f"no corpus at {args.corpus} (pass --corpus DIR)")
    tokens = dict(DEFAULT_TOKENS)
    for item in filter(None, args.tokens.split(",")):
        name, _, value = item.partition("=")
        tokens[name.strip()] = int(value)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    report = compare(models, args.corpus, tokens, log, args.seed)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
