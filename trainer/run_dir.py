"""A training run's directory: its metadata, its checkpoints, and one checkpoint exported as a model spec.

  moviechat_run.json     base spec, adapter or not, corpus hash, split, all settings, seed,
                         package versions, final metrics, time, peak memory, status
  adapter_* | model.*    the LoRA adapter (on `base`) or the full model, plus the tokenizer
  checkpoint-N/          the last `save_total_limit` checkpoints and the best one (atomic: written
                         under .staging/ and renamed into place, see trainer.movie_trainer)
  metrics.jsonl          every logged train/eval step;  loss.png  the loss curves
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from moviechat_tui.core.loading import RUN_METADATA
from trainer.config import TrainError

STAGING = ".staging"
METRICS_LOG = "metrics.jsonl"
LOSS_PLOT = "loss.png"


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
