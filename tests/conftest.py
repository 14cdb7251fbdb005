"""Shared fixtures: tiny models built in the test, on the real code paths."""

from __future__ import annotations

import os

import pytest

# Never reach for the network in tests, and keep user dirs out of the way.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MOVIECHAT_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("MOVIECHAT_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("MOVIECHAT_DB", raising=False)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from moviechat_tui.core.paths import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """GPT-2's BPE plus ChatML tokens and template: a stand-in for SmolLM2's tokenizer."""
    from moviechat_tui.core.paths import gpt2_tokenizer

    tok = gpt2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    tok.chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return tok


def _tiny_gpt2(tokenizer, seed: int = 0, n_positions: int = 256):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, gpt2_tokenizer):
    """A tiny random GPT-2 saved with save_pretrained: loads by the same path as a hub id."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    _tiny_gpt2(gpt2_tokenizer).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_chatml_dir(tmp_path_factory, chatml_tokenizer):
    """A tiny random GPT-2 whose tokenizer carries a ChatML chat template."""
    path = tmp_path_factory.mktemp("tiny-chatml")
    _tiny_gpt2(chatml_tokenizer, seed=1).save_pretrained(path)
    chatml_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory):
    """Module-scoped fixtures load models before the per-test dirs are set: their fast-path
    conversions go to a session cache, not the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MOVIECHAT_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
    yield
    patch.undo()


# --- the Textual app's pilot tests (test_app*.py; helpers in tui_pilot.py) ---------------------------


@pytest.fixture(scope="module")
def tiny_loaded(tiny_gpt2_dir):
    from moviechat_tui.core.loading import load_model

    return load_model(str(tiny_gpt2_dir))


@pytest.fixture(scope="module")
def slow_loaded(tiny_gpt2_dir):
    """The tiny model at ~20 tokens/s: slow enough to press esc mid-reply."""
    import time

    from moviechat_tui.core.loading import load_model

    saved = os.environ.get("MOVIECHAT_BACKEND")
    os.environ["MOVIECHAT_BACKEND"] = "transformers"  # the plain path, whose forward can be slowed
    try:
        loaded = load_model(str(tiny_gpt2_dir))
    finally:
        os.environ.pop("MOVIECHAT_BACKEND") if saved is None else os.environ.update(MOVIECHAT_BACKEND=saved)
    forward = loaded.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    loaded.model.forward = slow_forward
    return loaded


@pytest.fixture
def store(tmp_path):
    from moviechat_tui.core.store import Store

    with Store(tmp_path / "chat.db") as store:
        yield store
