"""Data parallelism: the unchanged trainer under torch.distributed.run, 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.mark.timeout(600)  # two fresh interpreters importing torch: ~1 min idle, minutes on a busy CPU
def test_two_processes_train_in_step(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(TESTS / "ddp_worker.py"), str(tiny_gpt2_dir), str(TESTS / "fixtures" / "cornell-mini"), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] != ranks[0]["initial"]  # it trained...
    assert ranks[0]["final"] == ranks[1]["final"]  # ...and both ranks hold the same weights
    train_batches = [r["batches"][:3] for r in ranks]  # 3 steps, no accumulation; evaluation follows
    assert train_batches[0] != train_batches[1]  # from different batches (gradients all-reduced)
    assert all(1 <= len(batch) <= 2 for batches in train_batches for batch in batches)  # batch 4 = 2 per rank
    assert json.loads((out / "moviechat_run.json").read_text())["world_size"] == 2
