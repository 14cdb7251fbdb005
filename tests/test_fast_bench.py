"""bench/inference.py on a tiny model: the JSON document and what each setting carries."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "inference.py"


def bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def report(tiny_gpt2_dir):
    done = bench("--model", str(tiny_gpt2_dir), "--runs", "2", "--turns", "1,5", "--new-tokens", "6",
                 "--no-processes", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # one JSON document, the log went to stderr


def test_each_setting_carries_the_ratio_and_first_token_time(report):
    settings = report["settings"]
    assert [s["turns"] for s in settings] == [1, 5]
    assert settings[0]["prompt_tokens"] < settings[1]["prompt_tokens"]
    for s in settings:
        assert s["decode_speed_ratio"] == pytest.approx(s["default"]["decode_tok_s"] / s["baseline"]["decode_tok_s"])
        assert s["ttft_ms"] == s["default"]["ttft_ms"] > 0
        # Both paths decode the full length (the end of turn is ignored), so their speeds compare.
        assert s["baseline"]["new_tokens"] == s["default"]["new_tokens"] == 6
        assert len(s["baseline"]["runs"]) == len(s["default"]["runs"]) == 2
    # Continuing the conversation: the history before the newest message was read ahead (at 1 turn
    # the plain format's shared opening, "User:", is too short to be worth caching).
    five = settings[1]
    assert 0 < five["warm_prefix_tokens"] < five["prompt_tokens"] and five["warm_ttft_ms"] > 0
    assert settings[0]["warm_prefix_tokens"] == 0 and settings[0]["warm_ttft_ms"] is None
    assert report["default_backend"] == "llama.cpp-q8_0"
    # (c) llama.cpp alone on the same model: each arm decoded the full length, and the ratio is
    # taken against the faster q4_1 arm.
    for s in settings:
        arms = s["llamacpp"]
        assert set(arms) == {"q4_1", "q4_1_no_flash", "f32"}
        assert all(arm["new_tokens"] == 6 and len(arm["runs"]) == 2 for arm in arms.values())
        fastest = max(arms["q4_1"]["decode_tok_s"], arms["q4_1_no_flash"]["decode_tok_s"])
        assert s["decode_ratio_vs_llamacpp"] == pytest.approx(s["default"]["decode_tok_s"] / fastest)
        assert s["decode_ratio_vs_llamacpp_f32"] == pytest.approx(s["default"]["decode_tok_s"] / arms["f32"]["decode_tok_s"])
    assert report["targets"]["decode_ratio_vs_llamacpp_min"]["target"] == ">= 1"
    assert report["targets"]["continuing_ttft_ms_10_turns"]["value"] is None  # no 10-turn setting in this run


def test_quality_guard_compares_fast_and_fp32(report):
    quality = report["quality"]
    assert quality["prompts"] > 0 and quality["reply_tokens"] > quality["prompts"]
    assert 0 <= quality["next_token_agreement"] <= 1
    # A random model is near-uniform: int8 barely moves its perplexity.
    assert abs(quality["perplexity_change_pct"]) < 2 and abs(quality["context_change_pct"]) < 2
    assert report["targets"]["quality_loss_pct"]["met"] is True
    assert report["targets"]["context_quality_loss_pct"]["met"] is True


def test_bad_arguments_are_one_line_errors():
    done = bench("--turns", "1,x")
    assert done.returncode == 2 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
    done = bench("--turns", "50")
    assert done.returncode == 2 and done.stderr.startswith("error:")


def test_an_unknown_model_is_an_error_not_a_traceback(tmp_path):
    done = bench("--model", str(tmp_path / "nope"), "--no-processes")
    assert done.returncode == 2 and "no model directory" in done.stderr and "Traceback" not in done.stderr
