"""The CTranslate2 path's choice and its conversion cache: converted once, keyed by the model's files.

llama.cpp comes first on CPU when it is installed; here it is made to look missing, so that `auto`
means CTranslate2 as it does on a machine without llama-cpp-python (test_llamacpp_cache.py tests
the llama.cpp cache the same way).
"""

import json
import shutil

import pytest
import torch

from moviechat_tui.core import backends
from moviechat_tui.core.backends import ct2_cache
from moviechat_tui.core.specs import RUN_METADATA
from moviechat_tui.core.dialogue import USER, Turn
from moviechat_tui.core.generation import GenerationSettings, stream_reply
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.paths import cache_dir
from cache_helpers import converted_dirs, count_conversions, guard_report

GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=8)


@pytest.fixture(autouse=True)
def _without_llamacpp(monkeypatch):
    monkeypatch.setattr(backends, "llamacpp_installed", lambda: False)


@pytest.fixture
def conversions(monkeypatch):
    """Counts conversions (the real ones still run)."""
    return count_conversions(monkeypatch, ct2_cache)


def _converted_dirs():
    return converted_dirs("ctranslate2")


def _log_probs_fp32(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)


def _log_probs_fast(loaded, ids):
    scored = loaded.fast.generator.score_batch([loaded.tokenizer.convert_ids_to_tokens(ids)])[0]
    return torch.tensor(scored.log_probs)


def test_cpu_default_is_the_fast_path_and_the_env_var_forces_transformers(tiny_gpt2_dir, monkeypatch):
    assert load_model(str(tiny_gpt2_dir)).backend.name == "ctranslate2-int8"
    monkeypatch.setenv("MOVIECHAT_BACKEND", "transformers")
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "transformers-fp32" and loaded.fast is None
    assert "transformers backend was asked for" in loaded.backend_note


def test_an_unknown_backend_is_one_clear_line(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setenv("MOVIECHAT_BACKEND", "turbo")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tiny_gpt2_dir))
    assert "turbo" in str(info.value) and "\n" not in str(info.value)


def test_without_ctranslate2_auto_falls_back_and_asking_for_it_fails(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setattr(backends, "ctranslate2_installed", lambda: False)
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "transformers-fp32" and "is installed (no fast path)" in loaded.backend_note
    with pytest.raises(ModelLoadError, match="pip install"):
        load_model(str(tiny_gpt2_dir), backend="ctranslate2")


def test_off_cpu_auto_keeps_transformers():
    found, why = backends.fast_candidates("auto", "cuda")
    assert found == [] and "CPU" in why
    assert backends.fast_candidates("ctranslate2", "cuda") == ([backends.CTRANSLATE2], "")


def test_converted_once_then_loaded_from_the_cache_without_transformers(tiny_gpt2_dir, conversions):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_gpt2_dir.iterdir())
    first = load_model(str(tiny_gpt2_dir))
    prompt = first.format.prompt_ids([Turn(USER, "Hello?")])
    reply = "".join(stream_reply(first, prompt, GREEDY))
    again = load_model(str(tiny_gpt2_dir))
    assert len(conversions) == 1 and len(_converted_dirs()) == 1
    assert again.backend.name == "ctranslate2-int8"
    assert not again.model_materialized  # the fast path didn't need the transformers model
    assert "".join(stream_reply(again, prompt, GREEDY)) == reply
    # Code that wants the transformers model still gets it, loaded on first use.
    ids = prompt + [first.tokenizer.eos_token_id]
    assert torch.allclose(_log_probs_fp32(again.model, ids), _log_probs_fp32(first.model, ids))
    assert again.model_materialized
    # The model's own directory was only read.
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tiny_gpt2_dir.iterdir()) == before


def test_a_changed_model_is_converted_again_and_the_old_conversion_removed(tiny_gpt2_dir, tmp_path, conversions):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, model_dir)
    first = load_model(str(model_dir))
    [old] = _converted_dirs()
    # Retrain (here: nudge one weight) and save over the same directory.
    with torch.no_grad():
        first.model.lm_head.weight[0, 0] += 1.0
    first.model.save_pretrained(model_dir)
    second = load_model(str(model_dir))
    [new] = _converted_dirs()
    assert len(conversions) == 2 and new != old
    ids = first.format.prompt_ids([Turn(USER, "Hi")])
    assert torch.allclose(_log_probs_fast(second, ids), _log_probs_fp32(second.model, ids), atol=0.1)


def test_a_failed_conversion_falls_back_and_is_not_retried(tiny_gpt2_dir, monkeypatch):
    calls = []

    def unsupported(*args, **kwargs):
        calls.append(1)
        raise NotImplementedError("no converter for this architecture")

    monkeypatch.setattr(ct2_cache, "_convert", unsupported)
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "transformers-fp32"
    assert "no converter for this architecture" in loaded.backend_note
    assert "".join(stream_reply(loaded, loaded.format.prompt_ids([Turn(USER, "Hi")]), GREEDY))
    assert load_model(str(tiny_gpt2_dir)).backend.name == "transformers-fp32" and len(calls) == 1
    with pytest.raises(ModelLoadError, match="ctranslate2 backend was asked for"):
        load_model(str(tiny_gpt2_dir), backend="ctranslate2")


def test_a_damaged_conversion_is_made_again(tiny_gpt2_dir, conversions):
    load_model(str(tiny_gpt2_dir))
    [name] = _converted_dirs()
    (cache_dir() / "ctranslate2" / name / "model.bin").write_bytes(b"truncated")
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "ctranslate2-int8" and len(conversions) == 2


def _adapter_run(tmp_path, base_dir, scale: float):
    """A trainer-style LoRA run on `base_dir` (random, non-zero adapter weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["c_attn", "c_proj"], init_lora_weights=False,
                        fan_in_fan_out=True)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    run = tmp_path / "run"
    peft_model.save_pretrained(run)
    (run / RUN_METADATA).write_text(json.dumps({"adapter": True, "base": str(base_dir)}))
    return run


def test_an_adapter_run_is_converted_with_the_adapter_merged(tiny_gpt2_dir, tmp_path, conversions, monkeypatch):
    # float32, so that what is compared is the merge alone: int8's error on a random model's flat
    # logits depends on the host's kernels (see test_fast_generation.py).
    monkeypatch.setenv(ct2_cache.COMPUTE_ENV, "float32")
    run = _adapter_run(tmp_path, tiny_gpt2_dir, scale=5.0)
    loaded = load_model(str(run))
    assert loaded.backend.name == "ctranslate2-float32"
    base = load_model(str(tiny_gpt2_dir), backend="transformers")
    ids = loaded.format.prompt_ids([Turn(USER, "Where are you going?")])
    merged, fast_lp, base_lp = _log_probs_fp32(loaded.model, ids), _log_probs_fast(loaded, ids), _log_probs_fp32(base.model, ids)
    # The adapter moves the scores, and the fast copy moves with it.
    assert (merged - base_lp).abs().max() > 0.1
    assert torch.allclose(fast_lp, merged, atol=1e-3)

    # A new adapter (retrained) in the same run directory: converted again.
    again = load_model(str(_adapter_run(tmp_path, tiny_gpt2_dir, scale=-5.0)))
    assert len(conversions) == 2 and len(_converted_dirs()) == 1
    assert torch.allclose(_log_probs_fast(again, ids), _log_probs_fp32(again.model, ids), atol=1e-3)


def test_fingerprint_follows_content():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        a = Path(d) / "config.json"
        a.write_text("{}")
        key = ct2_cache.fingerprint([a])
        assert ct2_cache.fingerprint([a]) == key
        a.write_text('{"n_layer": 2}')
        assert ct2_cache.fingerprint([a]) != key


def test_int8_that_fails_the_quality_guard_becomes_float32(tiny_gpt2_dir, monkeypatch):
    measured = []

    def guard(directory, compute_type, *args):
        measured.append(compute_type)
        return guard_report(5.0 if compute_type == "int8" else 0.0)

    monkeypatch.setattr(ct2_cache, "quality_of", guard)
    loaded = load_model(str(tiny_gpt2_dir))
    assert measured == ["int8", "float32"]
    assert loaded.backend.name == "ctranslate2-float32" and "5.0%" in loaded.backend_note
    again = load_model(str(tiny_gpt2_dir))  # the choice is cached with the conversion
    assert again.backend.name == "ctranslate2-float32" and measured == ["int8", "float32"]
    assert again.backend_note == loaded.backend_note


def test_the_compute_type_can_be_forced(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setenv("MOVIECHAT_FAST_COMPUTE", "float32")
    loaded = load_model(str(tiny_gpt2_dir))
    assert loaded.backend.name == "ctranslate2-float32" and loaded.backend_note == ""
    # float32 is exact: the same greedy reply as transformers.
    prompt = loaded.format.prompt_ids([Turn(USER, "Where are you going?")])
    plain = load_model(str(tiny_gpt2_dir), backend="transformers")
    assert "".join(stream_reply(loaded, prompt, GREEDY)) == "".join(stream_reply(plain, prompt, GREEDY))


def test_the_quality_guard_measures_the_copy_against_the_model(tiny_gpt2_dir, tmp_path, gpt2_tokenizer):
    model = load_model(str(tiny_gpt2_dir), backend="transformers").model
    exact = tmp_path / "exact"
    ct2_cache._convert_as(model, gpt2_tokenizer, exact, "float32")
    exact_report = ct2_cache.quality_of(exact, "float32", model, gpt2_tokenizer)
    assert abs(exact_report.change_pct) < 0.01 and abs(exact_report.context_change_pct) < 0.01
    # A copy of some other model is caught.
    other = load_model(str(_ranked_dir(tmp_path, gpt2_tokenizer)), backend="transformers").model
    wrong = tmp_path / "wrong"
    ct2_cache._convert_as(other, gpt2_tokenizer, wrong, "float32")
    wrong_report = ct2_cache.quality_of(wrong, "float32", model, gpt2_tokenizer)
    assert wrong_report.change_pct > 100 and wrong_report.context_change_pct > 100 and not wrong_report.passes


def _ranked_dir(tmp_path, tokenizer):
    """A tiny GPT-2 that always says " A": nothing like the random one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[tokenizer.encode(" A")[0], 0] = 20.0
    path = tmp_path / "ranked"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
