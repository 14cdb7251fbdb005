"""Fine-tune a base model on the corpus with transformers' Trainer; the output dir becomes a model spec.

    result = train(TrainConfig(base="smollm2-135m", corpus="data/cornell", out="runs/a", lora=True))
    load_model("runs/a")  # what moviechat-tui --model runs/a does

`train` reads top to bottom: the run directory (trainer.run_dir; refuse another run, or resume
this one), the corpus and its examples, the base model and precision (trainer.base_model), the
memory plan (trainer.memory), then MovieTrainer (trainer.movie_trainer) with its callbacks, and
the metadata written before, during and after.

Only reply tokens count in the loss (the prompt's labels are -100, see
trainer.dataset), and with gradient accumulation the loss is averaged over all
reply tokens of the effective batch (Trainer's num_items_in_batch).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Subset
from transformers import EarlyStoppingCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from moviechat_tui.core.loading import RUN_METADATA
from trainer.base_model import add_lora, choose_precision, load_base
from trainer.batching import Collator
from trainer.callbacks import InterruptCallback, MetricsLogCallback, RichProgressCallback, peak_memory_bytes, plot_losses
from trainer.config import CHANGEABLE_ON_RESUME, TrainConfig, TrainError
from trainer.dataset import build_examples
from trainer.memory import CPU_MICRO_TOKENS, GB, ModelShape, plan_memory
from trainer.movie_trainer import MovieTrainer
from trainer.run_dir import (
    LOSS_PLOT,
    METRICS_LOG,
    STAGING,
    check_checkpoint,
    holds_run,
    package_versions,
    read_metadata,
    write_metadata,
)


class TrainingInterrupted(Exception):
    """Ctrl-C: a checkpoint was saved; the message says how to resume."""


@dataclass
class TrainResult:
    out_dir: Path
    model: object
    tokenizer: object
    metadata: dict = field(default_factory=dict)


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


def train(config: TrainConfig, log=print, callbacks=(), changes: dict | None = None) -> TrainResult:
    """Run (or, with config.resume, continue) a training run in config.out; see the module docstring.

    `callbacks`: extra transformers TrainerCallbacks (tests use them to interrupt a run).
    `changes`: on resume, settings to change from the run's own ({"patience": 0}; only CHANGEABLE_ON_RESUME).
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
        changes = changes or {}
        if unknown := set(changes) - CHANGEABLE_ON_RESUME:
            raise TrainError(f"a resumed run keeps its {', '.join(sorted(unknown))}")
        # the run's own settings: same data, same schedule
        config = TrainConfig.from_dict({**previous["settings"], **changes})
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
                     recall_share=config.recall_share, length_balance=config.length_balance)
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
