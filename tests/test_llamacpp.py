"""The llama.cpp backend: GGUF files that llama.cpp reads as transformers computes, and replies that
follow the same rules, token for token where the weights are float32."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("llama_cpp")

from moviechat_tui.core.backends import MIN_PREFIX_TOKENS  # noqa: E402
from moviechat_tui.core.backends.gguf_export import ExportError, write_lora, write_model  # noqa: E402
from moviechat_tui.core.backends.llamacpp import open_gguf  # noqa: E402
from moviechat_tui.core.dialogue import BOT, USER, Turn  # noqa: E402
from moviechat_tui.core.generation import GenerationSettings, stream_reply, warm_prefix  # noqa: E402
from moviechat_tui.core.loading import load_model  # noqa: E402

IDS = [464, 3290, 318, 4771, 11, 290, 262, 6766, 318, 4171, 13, 1867, 466, 345, 765, 30, 50256, 198, 40, 760]


def _tiny_llama(tokenizer, tie: bool, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tie, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random init is near-uniform: spread the scores so that comparisons mean something
        model.model.embed_tokens.weight.mul_(20)
    return model


def _gguf_logits(path, tokenizer, ids, lora=None):
    if lora is None:
        backend = open_gguf(path, tokenizer, "f32", 128, {}, 2)
        return backend.logits(ids)
    from llama_cpp import Llama

    from moviechat_tui.core.backends.llamacpp import LlamaCppBackend

    llm = Llama(str(path), n_ctx=128, n_threads=2, lora_path=str(lora), verbose=False)
    return LlamaCppBackend(llm, tokenizer, path, "f32", 128).logits(ids)


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("tie", [True, False])
def test_a_llama_model_reads_the_same_in_llama_cpp(tmp_path, gpt2_tokenizer, tie):
    # Grouped-query attention (4 query heads, 2 key/value heads): the q/k row permutation must be right.
    model = _tiny_llama(gpt2_tokenizer, tie)
    path = write_model(model, gpt2_tokenizer, tmp_path / "llama.gguf")
    ours, theirs = _gguf_logits(path, gpt2_tokenizer, IDS), _hf_logits(model, IDS)
    assert torch.allclose(ours, theirs, atol=2e-3, rtol=1e-3), (ours - theirs).abs().max()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_a_gpt2_model_reads_the_same_in_llama_cpp(tmp_path, tiny_gpt2_dir, gpt2_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    path = write_model(model, gpt2_tokenizer, tmp_path / "gpt2.gguf")
    ours, theirs = _gguf_logits(path, gpt2_tokenizer, IDS), _hf_logits(model, IDS)
    assert torch.allclose(ours, theirs, atol=1e-3), (ours - theirs).abs().max()


def test_a_lora_adapter_applied_by_llama_cpp_equals_the_merged_model(tmp_path, gpt2_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = _tiny_llama(gpt2_tokenizer, tie=True, seed=1)
    base_path = write_model(base, gpt2_tokenizer, tmp_path / "base.gguf")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    adapter = write_lora(tmp_path / "adapter", merged.config, tmp_path / "adapter.gguf")
    ours, theirs = _gguf_logits(base_path, gpt2_tokenizer, IDS, lora=adapter), _hf_logits(merged, IDS)
    assert torch.allclose(ours, theirs, atol=1e-2, rtol=1e-3), (ours - theirs).abs().max()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_models_llama_cpp_cannot_run_are_refused_in_one_line(tmp_path, gpt2_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=len(gpt2_tokenizer), hidden_size=32, num_hidden_layers=1,
                                     ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32))
    with pytest.raises(ExportError, match="Llama and GPT-2") as info:
        write_model(model, gpt2_tokenizer, tmp_path / "opt.gguf")
    assert "\n" not in str(info.value)


# --- replies ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tiny_gpt2_dir):
    """The tiny model on llama.cpp with float32 weights, and on transformers."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MOVIECHAT_GGUF_WEIGHTS", "f32")
    try:
        fast = load_model(str(tiny_gpt2_dir), backend="llama.cpp")
    finally:
        patch.undo()
    assert fast.backend.name == "llama.cpp-f32"
    return fast, load_model(str(tiny_gpt2_dir), backend="transformers")


PROMPT = [Turn(USER, "Where were you last night?"), Turn(BOT, "Out."), Turn(USER, "Out where?")]


@pytest.mark.parametrize("settings", [
    GenerationSettings(temperature=0, max_new_tokens=16),  # greedy, with the default penalties
    GenerationSettings(temperature=1.3, top_k=0, top_p=0.95, seed=5, max_new_tokens=16),  # no top-k cut
], ids=["greedy", "sampled-without-top-k"])
def test_float32_replies_are_the_transformers_replies_token_for_token(pair, settings):
    fast, plain = pair
    prompt = fast.format.prompt_ids(PROMPT)
    eot = fast.format.end_of_turn_id
    ours = fast.backend.generate(prompt, settings, lambda _t: None, lambda: False, eot)
    theirs = plain.backend.generate(prompt, settings, lambda _t: None, lambda: False, eot)
    assert ours == theirs


def test_top_k_sampling_draws_only_among_the_transformers_candidates(pair):
    # With a top-k cut the draw runs on the k candidates (other random numbers than transformers'),
    # so each token must be one that transformers' own warpers leave a chance, and a seed repeats.
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    fast, plain = pair
    settings = GenerationSettings(temperature=1.5, top_k=5, top_p=0.9, repetition_penalty=1.0,
                                  no_repeat_ngram_size=0, seed=2, max_new_tokens=24)
    prompt, eot = fast.format.prompt_ids(PROMPT), fast.format.end_of_turn_id
    ours = fast.backend.generate(prompt, settings, lambda _t: None, lambda: False, eot)
    assert ours == fast.backend.generate(prompt, settings, lambda _t: None, lambda: False, eot)
    scores = plain.backend.logits(prompt + ours)[len(prompt) - 1:-1] / settings.temperature
    allowed = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(5)(None, scores)) > -float("inf")
    assert all(allowed[i, token] for i, token in enumerate(ours))
    assert len(set(ours)) > 1  # it did sample


def test_the_next_turn_reuses_the_cache_and_replies_the_same(pair):
    fast, _ = pair
    backend, greedy = fast.backend, GenerationSettings(temperature=0, max_new_tokens=8)
    history = fast.format.prompt_ids(PROMPT)
    reply = "".join(stream_reply(fast, history, greedy))
    follow_up = fast.format.prompt_ids([*PROMPT, Turn(BOT, reply), Turn(USER, "And then?")])
    hits = backend.prefix_hits
    warm = "".join(stream_reply(fast, follow_up, greedy))  # the cache holds the history and the reply
    assert backend.prefix_hits == hits + 1
    backend.clear_prefixes()
    cold = "".join(stream_reply(fast, follow_up, greedy))
    assert backend.prefix_hits == hits + 1 and warm == cold


def test_a_warmed_prefix_is_kept_and_a_different_conversation_replaces_it(pair):
    fast, _ = pair
    backend = fast.backend
    backend.clear_prefixes()
    prefix = fast.format.prompt_ids(PROMPT)[:-2]
    assert len(prefix) >= MIN_PREFIX_TOKENS
    warm_prefix(fast, prefix, wait=True)
    assert backend.cached == prefix
    assert not backend.warm(prefix)  # already there: nothing computed
    other = fast.format.prompt_ids([Turn(USER, "Something else entirely, from another conversation about boats, "
                                                    "money and a map left under the seat of a car.")])
    assert backend.warm(other) and backend.cached == other
    assert not backend.warm(prefix[: MIN_PREFIX_TOKENS - 1])  # too short to be worth it


def test_cancelled_before_the_first_token_reads_nothing(pair):
    fast, _ = pair
    got = fast.backend.generate(fast.format.prompt_ids(PROMPT), GenerationSettings(), lambda _t: None,
                                lambda: True, fast.format.end_of_turn_id)
    assert got == []
