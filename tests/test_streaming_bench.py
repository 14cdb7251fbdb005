"""bench/streaming.py on the tiny model: every arm gets the same replies, and the JSON carries the
figures and ratios that docs/benchmarks.md reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "streaming.py"


def test_the_streaming_bench_compares_the_same_replies_in_each_arm(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "streaming.json"
    done = subprocess.run([sys.executable, str(BENCH), "--model", str(tiny_gpt2_dir), "--messages", "3",
                           "--think", "0", "--save", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["same_replies_in_every_arm"] is True
    arms = result["arms"]
    assert list(arms) == ["engine, per word", "engine, paced", "app, per word", "app, paced"]
    for arm in arms.values():
        assert len(arm["runs"]) == 2 and all(len(run) == 3 for run in arm["runs"])  # A B C D, then D C B A
        assert arm["tokens"] == sum(r["tokens"] for run in arm["runs"] for r in run) > 0
        assert arm["first_token_ms_median"] > 0 and arm["first_piece_ms_median"] > 0
        for reply in (r for run in arm["runs"] for r in run):  # sent -> shown spans the model's first token
            assert reply["first_piece_ms"] is None or reply["first_piece_ms"] >= reply["first_token_ms"]
    first = arms["engine, per word"]
    for arm in arms.values():
        assert arm["decode_ratio_vs_first_arm"] == pytest.approx(
            arm["decode_tokens_per_second_median"] / first["decode_tokens_per_second_median"])
    assert "app, paced" in done.stdout
