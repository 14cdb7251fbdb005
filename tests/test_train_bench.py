"""bench/train.py and bench/train_step.py on tiny budgets: the JSON documents and what they carry."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.timeout(600)
def test_train_bench_compares_both_arms_on_the_same_budget():
    done = run("train.py", "--models", "small", "--corpus", str(CORNELL_MINI), "--tokens", "small=400", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    small = report["models"]["small"]
    a, b = small["baseline"], small["moviechat"]
    for arm in (a, b):
        assert arm["real_tokens"] >= 400 and arm["steps"] >= 1  # each ran until its budget was spent
        assert arm["peak_rss_gb"] > 0 and math.isfinite(arm["validation_loss"])
    # Same plan for both (only batching and the loss differ), and the ratios are (b)/(a).
    assert a["plan"]["micro_batch"] == b["plan"]["micro_batch"]
    assert small["tokens_per_s_ratio"] == pytest.approx(b["real_tokens_per_s"] / a["real_tokens_per_s"], rel=0.01)
    assert small["validation_loss_delta"] == pytest.approx(b["validation_loss"] - a["validation_loss"], abs=1e-3)


def test_train_bench_arguments_are_checked(tmp_path):
    done = run("train.py", "--models", "huge")
    assert done.returncode == 2 and "unknown model" in done.stderr
    done = run("train.py", "--corpus", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "no corpus" in done.stderr


@pytest.mark.timeout(600)
def test_train_step_bench_reports_both_losses_per_micro_batch():
    done = run("train_step.py", "--rows", "1", "--length", "16", "--steps", "2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(r["rows"], r["loss"]) for r in report["results"]] == [(1, "own"), (1, "reply")]
    own, reply = report["results"]
    assert report["reply_loss_speedup"]["1"] == pytest.approx(reply["tokens_per_s"] / own["tokens_per_s"], rel=0.01)
