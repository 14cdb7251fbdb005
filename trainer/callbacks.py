"""Trainer callbacks: rich progress, a JSONL metrics log, Ctrl-C -> checkpoint, and the loss plot."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

GB = 1024**3


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_memory_bytes() -> int:
    """Peak resident memory of this process (CPU); on a GPU, the peak CUDA allocation."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class InterruptCallback(TrainerCallback):
    """First Ctrl-C: finish the step, save a checkpoint, stop. A second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.interrupted = False

    @contextlib.contextmanager
    def catching_sigint(self):
        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            print("\nstopping: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        return control


class MetricsLogCallback(TrainerCallback):
    """Appends every log (train loss, eval loss, lr, tokens) as one JSON line, with time and memory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 2), **logs,
                  "rss_gb": round(rss_bytes() / GB, 3)}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class RichProgressCallback(TrainerCallback):
    """One progress bar: step, loss, reply+context tokens/s (no padding), ETA and memory."""

    def __init__(self) -> None:
        self.progress = None
        self.loss = float("nan")
        self.eval_loss = float("nan")

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self.start_time, self.start_tokens = time.time(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is None:
            return
        elapsed = max(1e-6, time.time() - self.start_time)
        tokens_per_s = (state.num_input_tokens_seen - self.start_tokens) / elapsed
        memory = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else rss_bytes()
        info = f"loss {self.loss:.3f}  val {self.eval_loss:.3f}  {tokens_per_s:,.0f} tok/s  mem {memory / GB:.2f} GB"
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss = logs["loss"]
        if "eval_loss" in logs:
            self.eval_loss = logs["eval_loss"]

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Training and validation loss against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = sorted({r["step"]: r["loss"] for r in records if "loss" in r}.items())
    val = sorted({r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}.items())
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (reply tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
