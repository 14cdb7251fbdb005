"""The mixed 4/8-bit GGUF copy: llama.cpp's quantizer through ctypes, GPTQ rounding onto iq4_nl, the
file llama.cpp reads, and the cache's choice of it behind the quality guard."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")

from moviechat_tui.core.backends import ggml_quant, gptq, llamacpp_cache  # noqa: E402
from moviechat_tui.core.backends.importance import IMPORTANCE_DIALOGUES, calibration_ids  # noqa: E402
from moviechat_tui.core.backends.llamacpp import open_gguf  # noqa: E402
from moviechat_tui.core.backends.llamacpp_mix import PLANS, four_bit_modules, write_mixed  # noqa: E402
from moviechat_tui.core.dialogue import exchange_turns, format_for, training_example  # noqa: E402
from moviechat_tui.core.loading import load_model  # noqa: E402
from moviechat_tui.core.paths import cache_dir  # noqa: E402
from cache_helpers import converted_dirs, guard_report  # noqa: E402
from test_llamacpp import IDS, _tiny_llama  # noqa: E402


def _correlated_inputs(n: int, tokens: int = 3000, seed: int = 0):
    """Inputs whose features differ in size and move together, as a layer's inputs do."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n, n)) / np.sqrt(n) + np.eye(n)
    return (rng.normal(size=(tokens, n)) * rng.uniform(0.1, 3.0, size=n)) @ mixing


def test_q8_0_round_trips_and_importance_spares_the_columns_that_matter():
    rng = np.random.default_rng(1)
    weight = rng.normal(scale=0.05, size=(64, 128)).astype(np.float32)
    back = ggml_quant.dequantize(ggml_quant.quantize(weight, "q8_0"), "q8_0")
    assert np.abs(back - weight).max() <= np.abs(weight).max() / 127 + 1e-6

    importance = np.where(np.arange(128) % 32 < 4, 100.0, 0.01).astype(np.float32)  # 4 columns per block matter
    def weighted_error(packed):
        return float((importance * (ggml_quant.dequantize(packed, "iq4_nl") - weight) ** 2).sum())
    assert weighted_error(ggml_quant.quantize(weight, "iq4_nl", importance)) < \
        0.7 * weighted_error(ggml_quant.quantize(weight, "iq4_nl"))
    with pytest.raises(ValueError, match="blocks of 32"):
        ggml_quant.quantize(np.zeros((4, 40), np.float32), "q8_0")


def test_gptq_keeps_the_layer_output_closer_than_rounding_on_the_same_scales():
    rng = np.random.default_rng(2)
    weight = rng.normal(scale=0.05, size=(96, 128)).astype(np.float32)
    inputs = _correlated_inputs(128)
    hessian = inputs.T @ inputs / len(inputs)
    importance = np.diag(hessian).astype(np.float32)
    rounded = ggml_quant.quantize(weight, "iq4_nl", importance)
    ours = gptq.quantize_iq4_nl(weight, hessian, importance)
    blocks = ours.reshape(96, 4, 18)
    assert np.array_equal(blocks[:, :, :2], rounded.reshape(96, 4, 18)[:, :, :2])  # llama.cpp's scales kept

    def output_error(packed):
        return float(((inputs @ (ggml_quant.dequantize(packed, "iq4_nl") - weight).T) ** 2).mean())
    assert output_error(ours) < 0.8 * output_error(rounded)


def test_gptq_in_steps_of_columns_is_gptq_in_one_step(monkeypatch):
    """The lazy batch (errors reach later columns a step at a time) changes the speed, not the result."""
    rng = np.random.default_rng(4)
    weight = rng.normal(scale=0.05, size=(32, 320)).astype(np.float32)
    inputs = _correlated_inputs(320, seed=4)
    hessian = inputs.T @ inputs / len(inputs)
    stepped = gptq.quantize_iq4_nl(weight, hessian)
    monkeypatch.setattr(gptq, "COLUMNS_PER_STEP", 320)
    assert np.array_equal(stepped, gptq.quantize_iq4_nl(weight, hessian))


@pytest.fixture
def tiny_llama_dir(tmp_path, gpt2_tokenizer):
    path = tmp_path / "tiny-llama"
    _tiny_llama(gpt2_tokenizer, tie=True, seed=3).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


def test_the_mixed_file_has_4_bits_where_planned_and_llama_cpp_reads_those_values(tmp_path, gpt2_tokenizer):
    import gguf

    model = _tiny_llama(gpt2_tokenizer, tie=True, seed=3)
    half = write_mixed(model, gpt2_tokenizer, format_for(gpt2_tokenizer), tmp_path / "half.gguf", "mix-4bit-half")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(half).tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_up.weight"] == "IQ4_NL"
    assert types["blk.0.attn_v.weight"] == types["blk.1.ffn_down.weight"] == types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.ffn_gate.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    path = write_mixed(model, gpt2_tokenizer, format_for(gpt2_tokenizer), tmp_path / "most.gguf", "mix-4bit-most")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_gate.weight"] == types["blk.0.attn_k.weight"] == "IQ4_NL"
    assert types["blk.0.attn_v.weight"] == types["blk.1.ffn_down.weight"] == "Q8_0"

    # The transformers model given the very values the file holds reads like llama.cpp does.
    reader = {t.name: t for t in gguf.GGUFReader(path).tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            tensor = reader[names.get_name(name, try_suffixes=(".weight",))]
            if tensor.tensor_type.name == "F32":
                continue
            values = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
            values = values.reshape(parameter.shape)
            if name.endswith(("q_proj.weight", "k_proj.weight")):  # undo llama.cpp's rotary row order
                heads = 4 if "q_proj" in name else 2
                values = values.reshape(heads, -1, 2, values.shape[1]).swapaxes(1, 2).reshape(parameter.shape)
            parameter.copy_(values)
        theirs = model(torch.tensor([IDS])).logits[0]
    ours = open_gguf(path, gpt2_tokenizer, "mix-4bit-most", 128, {}, 2).logits(IDS)
    assert torch.allclose(ours, theirs, atol=0.15), (ours - theirs).abs().max()  # llama.cpp rounds activations to 8 bits
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("tokenizer", ["gpt2_tokenizer", "chatml_tokenizer"])
def test_the_statistics_read_each_dialogue_as_training_lays_it_out(tokenizer, request):
    """The last line is the bot's reply and the roles alternate backwards from it, as in training."""
    fmt = format_for(request.getfixturevalue(tokenizer))
    for lines in IMPORTANCE_DIALOGUES:
        trained = training_example(fmt, exchange_turns(lines)[:-1], lines[-1], max_length=1024)
        assert calibration_ids(fmt, lines) == trained.input_ids


def test_gpt2_has_nothing_to_write_in_4_bits(tiny_gpt2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    assert all(four_bit_modules(model, plan) == set() for plan in PLANS)
    assert write_mixed(model, tokenizer, format_for(tokenizer), tmp_path / "x.gguf", "mix-4bit-most") is None


def test_auto_keeps_q8_0_and_a_mixed_copy_is_written_only_when_asked(tiny_llama_dir, monkeypatch):
    measured, written = [], []
    change = {"mix-4bit-most": 1.8, "mix-4bit-half": 0.0, "q8_0": 0.1, "f32": 0.0}
    context = {"mix-4bit-most": 4.7, "mix-4bit-half": 3.8, "q8_0": 0.8, "f32": 0.0}
    real_write = llamacpp_cache.write_mixed

    def guard(path, weights, *args):
        measured.append(weights)
        return guard_report(change[weights], context[weights])

    def counted_write(*args):
        written.append(args[-1])
        return real_write(*args)

    def convert_again():
        for folder in converted_dirs("llamacpp"):
            shutil.rmtree(cache_dir() / "llamacpp" / folder)
        measured.clear()
        written.clear()
        return load_model(str(tiny_llama_dir))

    monkeypatch.setattr(llamacpp_cache, "quality_of", guard)
    monkeypatch.setattr(llamacpp_cache, "write_mixed", counted_write)
    loaded = load_model(str(tiny_llama_dir))
    assert loaded.backend.name == "llama.cpp-q8_0" and measured == ["q8_0"] and written == []
    assert loaded.backend_note == ""

    context["q8_0"] = 2.5  # a q8_0 copy that loses the history gives way to f32
    loaded = convert_again()
    assert loaded.backend.name == "llama.cpp-f32" and measured == ["q8_0", "f32"] and written == []
    assert loaded.backend_note == ("raised the perplexity of replies that use the history: q8_0 by 2.5%"
                                   " (limit 2%): f32 instead")

    monkeypatch.setenv(llamacpp_cache.WEIGHTS_ENV, "mix-4bit-most")
    loaded = convert_again()
    assert loaded.backend.name == "llama.cpp-mix-4bit-most" and measured == written == ["mix-4bit-most"]
    assert loaded.backend_note == ("mix-4bit-most, as asked, raises the perplexity of replies that use the history"
                                   " by 4.7% (the guard's limit is 2%)")
    [folder] = converted_dirs("llamacpp")
    meta = json.loads((cache_dir() / "llamacpp" / folder / llamacpp_cache.METADATA).read_text())
    assert meta["weights"] == "mix-4bit-most" and meta["perplexity_change_pct_mix-4bit-most"] == 1.8
    assert meta["context_change_pct_mix-4bit-most"] == 4.7  # both measures are kept with the copy


def test_a_forced_mixed_copy_that_cannot_be_made_says_why(tiny_gpt2_dir, monkeypatch):
    monkeypatch.setenv(llamacpp_cache.WEIGHTS_ENV, "mix-4bit-half")
    loaded = load_model(str(tiny_gpt2_dir))  # GPT-2: nothing to write in 4 bits
    assert not loaded.backend.name.startswith("llama.cpp")
    assert "mix-4bit-half needs a Llama model" in loaded.backend_note
