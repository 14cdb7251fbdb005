"""Evaluation: reply perplexity against a hand loop, text metrics with known answers, the genre test, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from moviechat_tui.core.dialogue import IGNORE_INDEX
from moviechat_tui.core.loading import load_model
from trainer.cli import main
from trainer.corpus import load_corpus
from trainer.dataset import build_examples
from trainer.eval_report import markdown_report
from trainer.evaluate import EvalConfig, evaluate
from trainer.genre_test import shuffled_genres
from trainer.perplexity import perplexity, reply_nll
from trainer.sampled_replies import train_replies
from trainer.text_metrics import distinct_n, normalised, repeats_earlier_turn, text_tokens
from trainer.splits import SPLITS

CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"
METRICS = {"distinct_1", "distinct_2", "mean_words", "empty_rate", "repeat_rate"}


@pytest.fixture
def corpus():
    return load_corpus(CORNELL_MINI)


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids spinning against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _no_sampling(**changes) -> EvalConfig:
    return EvalConfig(samples=0, genre_test=False, **changes)


# --- perplexity -----------------------------------------------------------------


def _hand_nll(model, examples) -> tuple[float, int]:
    """One example at a time, no padding, the model's own loss (mean over its shifted labels)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(examples)):
            item = examples[i]
            input_ids = torch.tensor([item["input_ids"]])
            labels = torch.tensor([item["labels"]])
            n = int((labels[0, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=input_ids, labels=labels).loss.item() * n
            count += n
    return total, count


def test_batched_perplexity_equals_a_per_example_loop_whatever_the_batching(tiny, corpus):
    sets = [build_examples(corpus, tiny.tokenizer, split, max_length=128) for split in SPLITS]
    lengths = {n for examples in sets for n in examples.lengths}
    assert len(lengths) > 3  # batches of several sizes really get padded
    hand = [_hand_nll(tiny.model, examples) for examples in sets]
    for batch_size in (1, 3, 16):
        batched = [reply_nll(tiny.model, examples, batch_size) for examples in sets]
        for (nll, n), (hand_nll, hand_n) in zip(batched, hand):
            assert n == hand_n
            assert torch.allclose(torch.tensor(nll), torch.tensor(hand_nll), rtol=1e-4)
    total_nll, total_n = map(sum, zip(*hand))
    result = evaluate(tiny, corpus, "all", _no_sampling(max_length=128, batch_size=5))
    assert result["reply_tokens"] == total_n == sum(e.n_reply_tokens for e in sets)
    assert result["perplexity"] == pytest.approx(perplexity(total_nll, total_n), rel=1e-4)
    assert result["examples"] == corpus.n_exchanges == 16


def test_only_reply_tokens_count(tiny, corpus):
    """Lengthening the opening line (never a reply) changes no count; lengthening the last reply does."""
    extra = " And a great deal more besides."
    base = evaluate(tiny, corpus, "test", _no_sampling())
    conv = next(c for c in corpus.conversations if c.movie_id == "m3")

    def lengthen(turn: int) -> dict:
        old = conv.utterances[turn]
        conv.utterances[turn] = type(old)(old.id, old.speaker_id, old.text + extra)
        corpus.__dict__.pop("fingerprint", None)  # the content changed: a new cache key
        return evaluate(tiny, corpus, "test", _no_sampling())

    context_changed = lengthen(0)
    assert context_changed["reply_tokens"] == base["reply_tokens"]
    assert context_changed["perplexity"] != base["perplexity"]  # the context is seen, just not scored
    reply_changed = lengthen(len(conv.utterances) - 1)
    assert reply_changed["reply_tokens"] == base["reply_tokens"] + len(tiny.tokenizer.encode(extra))


# --- text metrics -------------------------------------------------------------------


def test_tokenisation_and_normalisation():
    assert text_tokens("Don't go -- NOW!") == ["don't", "go", "-", "-", "now", "!"]
    assert normalised("  Out...  where?") == normalised("out where") == "out where"
    assert repeats_earlier_turn("OUT!", ["Where are you going?", "out."])
    assert not repeats_earlier_turn("Out where?", ["Out."])
    assert not repeats_earlier_turn("...", ["!"])  # no words: never a repeat


def test_a_model_that_always_says_one_line(tiny, corpus):
    line = "No, no, no -- no way."
    tokens = text_tokens(line)
    own_ratio = len(set(tokens)) / len(tokens)
    own_bigrams = list(zip(tokens, tokens[1:]))
    calls = []

    def fixed(sample):
        calls.append(sample)
        return line

    one = evaluate(tiny, corpus, "test", EvalConfig(samples=1, genre_test=False), generator=fixed)["samples"]
    assert one["model"]["distinct_1"] == pytest.approx(own_ratio)
    assert one["model"]["distinct_2"] == pytest.approx(len(set(own_bigrams)) / len(own_bigrams))

    calls.clear()
    many = evaluate(tiny, corpus, "test", EvalConfig(samples=4, genre_test=False), generator=fixed)["samples"]
    assert many["n"] == len(calls) == 4
    # n-grams are counted over all replies: the same line n times adds no new ones
    assert many["model"]["distinct_1"] == pytest.approx(len(set(tokens)) / (4 * len(tokens)))
    assert many["model"]["mean_words"] == len([t for t in tokens if t.isalpha()])
    assert many["model"]["empty_rate"] == 0.0 and many["model"]["repeat_rate"] == 0.0
    m3 = next(c for c in corpus.conversations if c.movie_id == "m3").texts
    for sample, row in zip(calls, many["replies"]):
        assert sample.reference == row["reference"] and sample.reference in m3[1:]
        assert [t.text for t in sample.context] == m3[: m3.index(sample.reference)]
        assert sample.context[-1].role == "user"


def test_repeat_and_empty_rates(tiny, corpus):
    replies = {"copy": lambda s: s.earlier[0].upper() + "!!", "blank": lambda s: "   ", "new": lambda s: "Something else."}
    rates = {
        name: evaluate(tiny, corpus, "test", EvalConfig(samples=4, genre_test=False), generator=gen)["samples"]["model"]
        for name, gen in replies.items()
    }
    assert rates["copy"]["repeat_rate"] == 1.0 and rates["copy"]["empty_rate"] == 0.0
    assert rates["blank"]["empty_rate"] == 1.0 and rates["blank"]["repeat_rate"] == 0.0
    assert rates["blank"]["mean_words"] == 0.0 and rates["blank"]["distinct_1"] == 0.0
    assert rates["new"]["repeat_rate"] == 0.0 and rates["new"]["empty_rate"] == 0.0
    assert distinct_n([], 2) == 0.0


def test_ground_truth_and_seeded_random_baseline(tiny, corpus):
    config = EvalConfig(samples=5, genre_test=False, seed=7)
    first = evaluate(tiny, corpus, "all", config, generator=lambda s: "Fine.")["samples"]
    again = evaluate(tiny, corpus, "all", config, generator=lambda s: "Fine.")["samples"]
    assert first["replies"] == again["replies"] and first["random_baseline"] == again["random_baseline"]
    pool = set(train_replies(corpus))
    assert all(r["random_baseline"] in pool for r in first["replies"])
    references = [r["reference"] for r in first["replies"]]
    assert first["ground_truth"]["distinct_1"] == pytest.approx(distinct_n(references, 1))
    other = evaluate(tiny, corpus, "all", replace(config, seed=8), generator=lambda s: "Fine.")["samples"]
    assert [r["reference"] for r in other["replies"]] != references  # the seed picks the contexts


def test_engine_decoding_is_seeded(tiny, corpus):
    config = EvalConfig(samples=2, genre_test=False)
    first = evaluate(tiny, corpus, "test", config)["samples"]
    again = evaluate(tiny, corpus, "test", config)["samples"]
    assert [r["model"] for r in first["replies"]] == [r["model"] for r in again["replies"]]
    assert first["decoding"]["temperature"] > 0  # sampled, as chat does, yet reproducible
    assert first["model"]["empty_rate"] == 0.0  # the engine never ends a reply before it has text


# --- genres ---------------------------------------------------------------------------


def test_shuffled_genres_are_a_seeded_derangement(corpus):
    mapping = shuffled_genres(corpus, seed=3)
    with_genres = {m for m, movie in corpus.movies.items() if movie.genres}
    assert set(mapping) == with_genres  # m4 has none and keeps none
    assert all(mapping[m] != corpus.movies[m].genres for m in mapping)
    assert set(mapping.values()) <= {corpus.movies[m].genres for m in with_genres}
    assert shuffled_genres(corpus, seed=3) == mapping
    # movies sharing a genre set never swap it for the same set
    corpus.movies = {m: replace(movie, genres=("drama",)) if m in ("m0", "m2", "m3") else movie
                     for m, movie in corpus.movies.items()}
    for seed in range(10):
        mapping = shuffled_genres(corpus, seed)
        assert all(mapping[m] != corpus.movies[m].genres for m in mapping)
    corpus.movies = {m: replace(movie, genres=("drama",)) for m, movie in corpus.movies.items()}
    assert shuffled_genres(corpus) == {}  # one genre set: nothing to shuffle


def test_genre_test_reports_true_and_shuffled(tiny, corpus):
    plain = evaluate(tiny, corpus, "validation", EvalConfig(samples=0, genres=False))
    conditioned = evaluate(tiny, corpus, "validation", EvalConfig(samples=0, genres=True))
    g = plain["genre_perplexity"]
    assert g["true"] == pytest.approx(conditioned["perplexity"], rel=1e-5)
    assert conditioned["genre_perplexity"]["true"] == conditioned["perplexity"]
    assert g["shuffled"] != pytest.approx(g["true"], rel=1e-6)  # other genres, other prompts
    assert g["ratio"] == pytest.approx(g["shuffled"] / g["true"])
    assert g["shuffled"] == conditioned["genre_perplexity"]["shuffled"]  # same seed, same shuffle
    assert g["examples"] == g["shuffled_examples"] == plain["examples"]


def test_genre_test_skipped_without_genres(tiny, corpus):
    corpus.movies = {m: replace(movie, genres=()) for m, movie in corpus.movies.items()}
    result = evaluate(tiny, corpus, "validation", EvalConfig(samples=0))
    assert result["genre_perplexity"] is None and "no genres" in result["genre_note"]
    assert "no genres" in markdown_report(result)


# --- the command ------------------------------------------------------------------------


def test_eval_command_json_and_markdown(tiny_gpt2_dir, tmp_path, capsys):
    report = tmp_path / "eval.md"
    rc = main(["eval", "--model", str(tiny_gpt2_dir), "--corpus", str(CORNELL_MINI), "--split", "test",
               "--samples", "2", "--json", "--out", str(report), "--no-progress", "--probe-seeds", "1"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["probes"]["probes"] == 72 and 0 <= result["probes"]["recall"] <= 1  # on by default
    assert "context probes (72 conversations" in report.read_text()
    assert isinstance(result["perplexity"], float) and result["perplexity"] > 1
    assert isinstance(result["examples"], int) and isinstance(result["reply_tokens"], int)
    assert set(result["genre_perplexity"]) >= {"true", "shuffled", "ratio"}
    assert all(isinstance(result["genre_perplexity"][k], float) for k in ("true", "shuffled", "ratio"))
    samples = result["samples"]
    assert samples["n"] == 2 and len(samples["replies"]) == 2
    for column in ("model", "ground_truth", "random_baseline"):
        assert set(samples[column]) == METRICS and all(isinstance(v, float) for v in samples[column].values())
    assert result["report"] == str(report)
    text = report.read_text()
    assert "| distinct-1 |" in text and "random train reply" in text and f"{result['perplexity']:.2f}" in text


def test_eval_command_samples_zero_skips_sampling(tiny_gpt2_dir, tmp_path, capsys, monkeypatch):
    import trainer.sampled_replies as sampled_replies_module

    def no_generation(*args, **kwargs):
        raise AssertionError("sampling ran with --samples 0")

    monkeypatch.setattr(sampled_replies_module, "stream_reply", no_generation)
    rc = main(["eval", "--model", str(tiny_gpt2_dir), "--corpus", str(CORNELL_MINI), "--split", "validation",
               "--samples", "0", "--no-genre-test", "--no-probes", "--out", str(tmp_path / "r.md")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "perplexity over reply tokens" in out and "skipped (--samples 0)" in out
    assert "skipped (--samples 0)" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model"], "no model directory"),
    (["--samples", "-1"], "--samples"),
    (["--max-length", "100000"], "context window"),
])
def test_eval_command_bad_input(tiny_gpt2_dir, tmp_path, capsys, args, message):
    argv = ["eval", "--model", str(tiny_gpt2_dir), "--corpus", str(CORNELL_MINI), "--out", str(tmp_path / "r.md"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_persona_test_compares_true_and_shuffled_personas(tiny, corpus):
    result = evaluate(tiny, corpus, "all", EvalConfig(samples=0, genre_test=False, persona=True))
    p = result["persona_perplexity"]
    assert result["persona"] is True and p["true"] == pytest.approx(result["perplexity"])
    assert p["shuffled"] != p["true"] and p["ratio"] == pytest.approx(p["shuffled"] / p["true"])
    assert p["examples"] == result["examples"]
    assert evaluate(tiny, corpus, "all", EvalConfig(samples=0, genre_test=False))["persona_perplexity"] is None


def test_default_report_path(tmp_path):
    from trainer.eval_report import default_report_path

    run = tmp_path / "run"
    run.mkdir()
    (run / "moviechat_run.json").write_text("{}")
    assert default_report_path(str(run), {"split": "test", "model_source": str(run)}) == run / "eval-test.md"
    plain = default_report_path("smollm2-135m", {"split": "validation", "model_source": "/cache/smollm2"})
    assert plain == Path("eval-smollm2-135m-validation.md")
