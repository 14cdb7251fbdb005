"""Fine-tune a base model on the corpus with transformers' Trainer; the output dir becomes a model spec.

    result = train(TrainConfig(base="smollm2-135m", corpus="data/cornell", out="runs/a", lora=True))
    load_model("runs/a")  # what moviechat-tui --model runs/a does

What the run directory holds:
  moviechat_run.json     base spec, adapter or not, corpus hash, split, all settings, seed,
                         package versions, final metrics, time, peak memory, status
  adapter_* | model.*    the LoRA adapter (on `base`) or the full model, plus the tokenizer
  checkpoint-N/          the last `save_total_limit` checkpoints and the best one (atomic: written
                         under .staging/ and renamed into place)
  metrics.jsonl          every logged train/eval step;  loss.png  the loss curves

Only reply tokens count in the loss (the prompt's labels are -100, see
trainer.dataset), and with gradient accumulation the loss is averaged over all
reply tokens of the effective batch (Trainer's num_items_in_batch).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from moviechat_tui.core.loading import RUN_METADATA, ModelLoadError, load_model
from trainer.callbacks import InterruptCallback, MetricsLogCallback, RichProgressCallback, peak_memory_bytes, plot_losses
from trainer.config import GPT2_SCRATCH, TrainConfig
from trainer.batching import Collator, LengthBucketSampler
from trainer.dataset import build_examples
from trainer.loss import reply_loss, supports_reply_loss
from trainer.memory import CPU_MICRO_TOKENS, GB, ModelShape, plan_memory

STAGING = ".staging"
METRICS_LOG = "metrics.jsonl"
LOSS_PLOT = "loss.png"


class TrainError(Exception):
    """A run that cannot start or continue (one line)."""


class TrainingInterrupted(Exception):
    """Ctrl-C: a checkpoint was saved; the message says how to resume."""


@dataclass
class TrainResult:
    out_dir: Path
    model: object
    tokenizer: object
    metadata: dict = field(default_factory=dict)


# --- the base model ----------------------------------------------------------------


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


# --- precision -------------------------------------------------------------------------


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


# --- the run directory --------------------------------------------------------------


def read_metadata(out: Path) -> dict | None:
    path = out / RUN_METADATA
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TrainError(f"{path} is unreadable ({exc})") from None


def write_metadata(out: Path, metadata: dict) -> None:
    tmp = out / f".{RUN_METADATA}.tmp"
    tmp.write_text(json.dumps(metadata, indent=2, default=str))
    os.replace(tmp, out / RUN_METADATA)


def holds_run(out: Path) -> bool:
    return (out / RUN_METADATA).is_file() or any(out.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))


def check_checkpoint(path: Path) -> None:
    """Refuse a damaged checkpoint before Trainer half-loads it."""
    from safetensors import safe_open

    try:
        json.loads((path / "trainer_state.json").read_text())
        weights = [p for p in ("adapter_model.safetensors", "model.safetensors") if (path / p).is_file()]
        if not weights:
            raise ValueError("no model weights")
        with safe_open(str(path / weights[0]), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
        if not (path / "optimizer.pt").is_file():
            raise ValueError("no optimizer state")
    except Exception as exc:  # json, safetensors and OS errors alike
        raise TrainError(
            f"checkpoint {path} is corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "move it away to resume from the previous checkpoint"
        ) from None


def package_versions() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("moviechat", "torch", "transformers", "peft", "accelerate"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


# --- the Trainer -----------------------------------------------------------------------


class MovieTrainer(Trainer):
    """Trainer with length-bucketed batches (same order for a seed and epoch), the loss computed at
    reply tokens only (trainer.loss), optionally a KL term to the base, and atomic checkpoints."""

    def __init__(self, *args, kl_weight: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kl_weight = kl_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Under DDP the forward must go through the wrapper (it syncs gradients): use the model's own loss there.
        if model is not self.accelerator.unwrap_model(model) or not supports_reply_loss(model) or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        kl_weight = self.kl_weight if model.training else 0.0  # validation loss stays the plain reply loss
        loss = reply_loss(model, inputs, num_items_in_batch, kl_weight=kl_weight)
        return (loss, {"loss": loss}) if return_outputs else loss

    def get_train_dataloader(self) -> DataLoader:
        # Under DDP accelerate deals batches out in turn and skips a round whose last batch is short;
        # bucketing leaves short batches anywhere in the order, so there they are dropped instead.
        sampler = LengthBucketSampler(self.train_dataset.lengths, self._train_batch_size, seed=self.args.seed,
                                      largest_first=True, drop_last=self.args.world_size > 1)
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    def _save_checkpoint(self, model, trial) -> None:
        # Let Trainer write into <out>/.staging/checkpoint-N, then rename it into place:
        # a kill mid-save leaves only .staging behind, never a half checkpoint.
        root = self.args.output_dir
        staging = os.path.join(root, STAGING)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(root, name)
        if self.args.should_save:
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = root
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            best = self.state.best_model_checkpoint
            if best and best.startswith(staging):
                self.state.best_model_checkpoint = best.replace(staging, root, 1)
            if self.state.best_global_step and os.path.isdir(
                os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            ):
                self.state.best_model_checkpoint = os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            self.state.save_to_json(os.path.join(staging, name, "trainer_state.json"))
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=root, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()


def _eval_subset(examples, n: int, seed: int):
    if n <= 0 or n >= len(examples):
        return examples
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(examples), generator=generator)[:n].sort().values.tolist()
    return Subset(examples, indices)


def _load_corpus(path: str | None):
    from trainer.corpus import load_corpus

    if path is None:
        from trainer.download import ensure_corpus

        path = ensure_corpus(progress=False)
    return load_corpus(path)


def train(config: TrainConfig, log=print, callbacks=()) -> TrainResult:
    """Run (or, with config.resume, continue) a training run in config.out; see the module docstring.

    `callbacks`: extra transformers TrainerCallbacks (tests use them to interrupt a run).
    """
    started = time.time()
    out = Path(config.out).expanduser()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    say = log if rank == 0 else (lambda *a, **k: None)

    previous = read_metadata(out) if out.is_dir() else None
    checkpoint = None
    if config.resume:
        if previous is None:
            raise TrainError(f"nothing to resume in {out} (no {RUN_METADATA})")
        progress, resume = config.progress, True
        config = TrainConfig.from_dict(previous["settings"])  # the run's own settings: same data, same schedule
        config.resume, config.progress, config.out = resume, progress, str(out)
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            say(f"no checkpoint in {out} yet: starting the run over")
        else:
            check_checkpoint(Path(last))
            checkpoint = last
    elif out.is_dir() and holds_run(out):
        raise TrainError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if config.batch_size % world:
        raise TrainError(f"--batch-size {config.batch_size} is not divisible by the {world} processes")

    corpus = _load_corpus(config.corpus)
    from trainer.corpus import corpus_hash

    chash = corpus_hash(corpus)
    if previous and config.resume and previous.get("corpus_hash") not in (None, chash):
        raise TrainError(f"the corpus differs from the one {out} was trained on (hash {previous['corpus_hash'][:12]})")

    model, tokenizer = load_base(config.base, config.seed)
    precision = choose_precision(config.precision, warn=say)
    data_args = dict(max_length=config.max_length, genres=config.genres, ratios=config.ratios, salt=config.salt,
                     persona=config.persona, persona_dropout=config.persona_dropout if config.persona else 0.0,
                     recall_share=config.recall_share)
    train_set = build_examples(corpus, tokenizer, "train", **data_args)
    val_set = build_examples(corpus, tokenizer, "validation", **data_args)
    if len(train_set) == 0 or len(val_set) == 0:
        raise TrainError(f"the corpus has {len(train_set)} training and {len(val_set)} validation examples; need both")
    eval_set = _eval_subset(val_set, config.eval_examples, config.seed)

    if config.kl_weight and not config.lora:
        raise TrainError("--kl-weight needs --lora (the base is the model with its adapter turned off)")
    if config.lora:
        model = add_lora(model, config)
    shape = ModelShape.of(model)
    plan = plan_memory(shape, config.batch_size // world, config.max_length, config.max_memory,
                       activation_bytes=4 if precision == "fp32" else 2, micro_batch=config.micro_batch,
                       checkpointing=config.gradient_checkpointing,
                       max_micro_tokens=None if torch.cuda.is_available() else CPU_MICRO_TOKENS)
    say(f"model: {config.base}{' + LoRA' if config.lora else ''}, {shape.n_params / 1e6:.1f}M parameters, "
        f"{shape.n_trainable / 1e6:.2f}M trainable; precision {precision}; "
        f"{len(train_set):,} training / {len(eval_set):,} of {len(val_set):,} validation examples")
    say(plan.describe())

    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / plan.micro_batch / world) / plan.grad_accumulation)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accumulation,
        activation_checkpointing=plan.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup_ratio * total_steps),
        lr_scheduler_type="cosine",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        include_num_input_tokens_seen="non_padding",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),  # also what makes accelerate run multi-CPU (gloo) under torchrun
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )
    interrupt = InterruptCallback()
    callbacks = [interrupt, MetricsLogCallback(out / METRICS_LOG), *callbacks]
    if config.progress:
        callbacks.append(RichProgressCallback())
    if config.patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = MovieTrainer(kl_weight=config.kl_weight, model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                           data_collator=Collator(train_set.pad_id), processing_class=tokenizer, callbacks=callbacks)
    if config.progress:  # the bar shows the loss; no raw log dicts printed over it
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)

    metadata = {
        "format": 1,
        "status": "running",
        "base": config.base,
        "adapter": config.lora,
        "corpus": corpus.source if hasattr(corpus, "source") else config.corpus,
        "corpus_hash": chash,
        "split": {"ratios": list(config.ratios), "salt": config.salt, "by": "movie"},
        "examples": {"train": len(train_set), "validation": len(val_set), "validation_scored": len(eval_set)},
        "settings": config.to_dict(),
        "seed": config.seed,
        "precision": precision,
        "memory_plan": {"micro_batch": plan.micro_batch, "grad_accumulation": plan.grad_accumulation,
                        "gradient_checkpointing": plan.gradient_checkpointing,
                        "estimated_peak_gb": round(plan.estimated_bytes / GB, 3), "budget_gb": round(plan.budget_bytes / GB, 3)},
        "world_size": world,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "packages": package_versions(),
        "started": (previous or {}).get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if rank == 0:
        write_metadata(out, metadata)

    with interrupt.catching_sigint():
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.time() - started + float((previous or {}).get("train_seconds") or 0)
    if interrupt.interrupted:
        if rank == 0:
            write_metadata(out, {**metadata, "status": "interrupted", "train_seconds": round(seconds, 1),
                                 "peak_memory_gb": round(peak_memory_bytes() / GB, 3)})
        last = get_last_checkpoint(str(out))
        raise TrainingInterrupted(f"interrupted: checkpoint saved in {last}; continue with "
                                  f"moviechat-train train --out {out} --resume")

    final_eval = trainer.evaluate()
    trainer.save_model(str(out))
    if rank == 0:
        tokenizer.save_pretrained(str(out))
        metrics = {
            "global_step": trainer.state.global_step,
            "train_loss": round(train_output.training_loss, 4),
            "eval_loss": round(final_eval["eval_loss"], 4),
            "eval_perplexity": round(math.exp(final_eval["eval_loss"]), 3),
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
            "tokens_seen": int(trainer.state.num_input_tokens_seen),
        }
        metadata.update(
            status="complete",
            metrics=metrics,
            train_seconds=round(seconds, 1),
            peak_memory_gb=round(peak_memory_bytes() / GB, 3),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_metadata(out, metadata)
        plot_losses(out / METRICS_LOG, out / LOSS_PLOT)
        say(f"done in {seconds / 60:.1f} min: validation loss {metrics['eval_loss']} "
            f"(perplexity {metrics['eval_perplexity']}), peak memory {metadata['peak_memory_gb']} GB; "
            f"chat with: moviechat-tui --model {out}")
    return TrainResult(out, trainer.model, tokenizer, metadata)


# --- exporting a checkpoint as a model spec -------------------------------------------

_TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "trainer_state.json")


def export_checkpoint(run_dir: str | Path, dest: str | Path, checkpoint: str | None = None) -> dict:
    """Copy one checkpoint of a run (default: its best, else its last) to `dest` as a loadable model spec.

    For runs stopped before their end: the weights/adapter and tokenizer of the checkpoint, and
    moviechat_run.json with the run's settings and the checkpoint's step and validation loss.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    meta = read_metadata(run_dir)
    if meta is None:
        raise TrainError(f"{run_dir} is not a training run (no {RUN_METADATA})")
    if checkpoint is None:
        last = get_last_checkpoint(str(run_dir))
        if last is None:
            raise TrainError(f"{run_dir} has no checkpoint to export")
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        checkpoint = state.get("best_model_checkpoint") or last
    source = Path(checkpoint) if Path(checkpoint).is_dir() else run_dir / checkpoint
    source = run_dir / source.name  # checkpoints are named relative to their run
    check_checkpoint(source)
    state = json.loads((source / "trainer_state.json").read_text())
    step = state["global_step"]
    evals = [r for r in state.get("log_history", []) if "eval_loss" in r and r.get("step") == step]
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name not in _TRAINING_STATE and not item.name.startswith("rng_state"):
            shutil.copy2(item, dest / item.name)
    metrics = {"global_step": step, "max_steps": state.get("max_steps")}
    if evals:
        metrics.update(eval_loss=round(evals[-1]["eval_loss"], 4), eval_perplexity=round(math.exp(evals[-1]["eval_loss"]), 3))
    exported = {**meta, "metrics": {**meta.get("metrics", {}), **metrics}, "exported_from": f"{run_dir.name}/{source.name}"}
    write_metadata(dest, exported)
    return exported
