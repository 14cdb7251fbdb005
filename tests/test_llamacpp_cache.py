"""The llama.cpp path's choice and its GGUF cache: written once, keyed by the model's files; q8_0 only
while it passes the quality guard; CTranslate2, then transformers, when llama.cpp can't serve."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

pytest.importorskip("llama_cpp")

from moviechat_tui.core import backends  # noqa: E402
from moviechat_tui.core.backends import llamacpp_cache  # noqa: E402
from moviechat_tui.core.dialogue import USER, Turn  # noqa: E402
from moviechat_tui.core.generation import GenerationSettings, stream_reply  # noqa: E402
from moviechat_tui.core.loading import ModelLoadError, load_model  # noqa: E402
from moviechat_tui.core.paths import cache_dir  # noqa: E402
from cache_helpers import converted_dirs, count_conversions, guard_report  # noqa: E402
from moviechat_tui.core.specs import RUN_METADATA  # noqa: E402

GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=8)


@pytest.fixture
def conversions(monkeypatch):
    """Counts GGUF conversions (the real ones still run)."""
    return count_conversions(monkeypatch, llamacpp_cache)


def _converted_dirs():
    return converted_dirs("llamacpp")


def _reply(loaded, text="Where are you going?"):
    return "".join(stream_reply(loaded, loaded.format.prompt_ids([Turn(USER, text)]), GREEDY))


def test_cpu_default_is_llama_cpp_written_once_then_opened_without_transformers(tiny_gpt2_dir, conversions):
    first = load_model(str(tiny_gpt2_dir))
    assert first.backend.name == "llama.cpp-q8_0" and first.backend is first.fast
    reply = _reply(first)
    again = load_model(str(tiny_gpt2_dir))
    assert len(conversions) == 1 and len(_converted_dirs()) == 1
    assert again.backend.name == "llama.cpp-q8_0" and not again.model_materialized
    assert _reply(again) == reply
    meta = json.loads((cache_dir() / "llamacpp" / _converted_dirs()[0] / llamacpp_cache.METADATA).read_text())
    assert meta["weights"] == "q8_0" and abs(meta["perplexity_change_pct_q8_0"]) <= 2.0
    assert abs(meta["context_change_pct_q8_0"]) <= 2.0


def test_a_changed_model_is_written_again_and_the_old_file_removed(tiny_gpt2_dir, tmp_path, conversions):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, model_dir)
    first = load_model(str(model_dir))
    [old] = _converted_dirs()
    with torch.no_grad():
        first.model.lm_head.weight[0, 0] += 1.0
    first.model.save_pretrained(model_dir)
    load_model(str(model_dir))
    [new] = _converted_dirs()
    assert len(conversions) == 2 and new != old


def test_a_conversion_killed_midway_leaves_nothing_behind_once_the_next_one_runs(tiny_gpt2_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, model_dir)
    load_model(str(model_dir))
    [name] = _converted_dirs()
    root = cache_dir() / "llamacpp"
    shutil.rmtree(root / name)  # as if this launch had been killed while converting...
    gone = subprocess.Popen(["true"])
    gone.wait()  # ...by this process, which no longer runs
    running = subprocess.Popen(["sleep", "60"])  # while another launch still converts
    try:
        killed, busy = root / f"{name}.tmp-{gone.pid}", root / f"{name}.tmp-{running.pid}"
        for folder in (killed, busy):
            folder.mkdir()
            (folder / "f32.gguf").write_bytes(b"half written")
        load_model(str(model_dir))
        assert not killed.exists() and busy.exists() and (root / name / llamacpp_cache.METADATA).is_file()
    finally:
        running.kill(), running.wait()


def test_q8_0_that_fails_the_quality_guard_becomes_f32(tiny_gpt2_dir, monkeypatch):
    measured = []

    def guard(path, weights, *args):
        measured.append(weights)
        return guard_report(5.0 if weights == "q8_0" else 0.0)

    monkeypatch.setattr(llamacpp_cache, "quality_of", guard)
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "llama.cpp-f32" and "5.0%" in loaded.backend_note
    again = load_model(str(tiny_gpt2_dir))  # the choice is kept with the file
    assert again.backend.name == "llama.cpp-f32" and measured == ["q8_0", "f32"]
    assert [p.name for p in (cache_dir() / "llamacpp" / _converted_dirs()[0]).glob("*.gguf")] == ["model.gguf"]


def test_the_weights_can_be_forced_and_a_wrong_value_is_one_line(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setenv("MOVIECHAT_GGUF_WEIGHTS", "f32")
    assert load_model(str(tiny_gpt2_dir)).backend.name == "llama.cpp-f32"
    monkeypatch.setenv("MOVIECHAT_GGUF_WEIGHTS", "q2")
    loaded = load_model(str(tiny_gpt2_dir))  # auto: the fault is noted, CTranslate2 serves instead
    assert loaded.backend.name.startswith("ctranslate2") and "MOVIECHAT_GGUF_WEIGHTS" in loaded.backend_note
    with pytest.raises(ModelLoadError, match="MOVIECHAT_GGUF_WEIGHTS"):
        load_model(str(tiny_gpt2_dir), backend="llama.cpp")


def test_a_model_llama_cpp_cannot_run_goes_to_ctranslate2_and_is_not_retried(tiny_gpt2_dir, monkeypatch,
                                                                              conversions):
    from moviechat_tui.core.backends.gguf_export import ExportError

    def refuse(*args):  # as for an architecture the exporter doesn't know (test_llamacpp.py tests that one)
        raise ExportError("llama.cpp export knows Llama and GPT-2 models, not 'neox'")

    monkeypatch.setattr(llamacpp_cache, "write_model", refuse)
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name.startswith("ctranslate2") and "can't run this model" in loaded.backend_note
    assert _reply(loaded)
    again = load_model(str(tiny_gpt2_dir))  # the refusal is remembered, and said again
    assert again.backend.name.startswith("ctranslate2") and "can't run this model" in again.backend_note
    assert len(conversions) == 1
    with pytest.raises(ModelLoadError, match="llama.cpp backend was asked for.*can't run this model") as info:
        load_model(str(tiny_gpt2_dir), backend="llama.cpp")
    assert "\n" not in str(info.value)


def test_without_llama_cpp_auto_uses_ctranslate2_and_asking_for_it_fails(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setattr(backends, "llamacpp_installed", lambda: False)
    assert load_model(str(tiny_gpt2_dir)).backend.name.startswith("ctranslate2")
    with pytest.raises(ModelLoadError, match="llama-cpp-python"):
        load_model(str(tiny_gpt2_dir), backend="llama.cpp")


def test_the_backend_names_people_type_are_understood(tiny_gpt2_dir, monkeypatch):
    for name in ("llama.cpp", "llamacpp", "llama-cpp", "LLAMA.CPP"):
        monkeypatch.setenv("MOVIECHAT_BACKEND", name)
        assert load_model(str(tiny_gpt2_dir)).backend.name.startswith("llama.cpp")


def test_an_adapter_run_is_written_with_the_adapter_merged(tiny_gpt2_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir),
                                LoraConfig(r=4, lora_alpha=64, target_modules=["c_attn", "c_proj"],
                                           init_lora_weights=False, fan_in_fan_out=True))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(5.0)
    run = tmp_path / "run"
    peft_model.save_pretrained(run)
    (run / RUN_METADATA).write_text(json.dumps({"adapter": True, "base": str(tiny_gpt2_dir)}))
    tuned = load_model(str(run))
    base = load_model(str(tiny_gpt2_dir), backend="transformers")
    assert tuned.backend.name.startswith("llama.cpp")
    ids = tuned.format.prompt_ids([Turn(USER, "Where are you going?")])
    ours, merged, untuned = tuned.backend.logits(ids), tuned.transformers.logits(ids), base.backend.logits(ids)
    # The adapter moves the scores, and the GGUF copy moves with it (its 8-bit error is far smaller).
    assert (ours - merged).abs().max() < (merged - untuned).abs().max() / 4
