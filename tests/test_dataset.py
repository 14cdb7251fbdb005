"""Training examples: masking, context truncation, roles, splits, cache, batching, collation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import trainer.dataset as dataset_module
from moviechat_tui.core.dialogue import IGNORE_INDEX, exchange_turns, format_for, training_example
from trainer.corpus import load_corpus
from trainer.corpus_records import Conversation, Utterance
from trainer.batching import Collator, LengthBucketSampler, padding_fraction, random_batches
from trainer.dataset import build_examples
from trainer.recall import FACT_KINDS
from trainer.splits import SPLITS

CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"


@pytest.fixture
def corpus():
    return load_corpus(CORNELL_MINI)


def _all_splits(corpus, tokenizer, **kwargs):
    return {split: build_examples(corpus, tokenizer, split, **kwargs) for split in SPLITS}


def test_one_example_per_reply_with_only_reply_tokens_labelled(corpus, gpt2_tokenizer):
    sets = _all_splits(corpus, gpt2_tokenizer, max_length=128)
    assert sum(len(s) for s in sets.values()) == corpus.n_exchanges == 16
    eos = gpt2_tokenizer.eos_token_id
    for examples in sets.values():
        for i in range(len(examples)):
            item = examples[i]
            conv_index, turn = (int(x) for x in examples.sources[i])
            reply = corpus.conversations[conv_index].texts[turn]
            labelled = [t for t in item["labels"] if t != IGNORE_INDEX]
            prompt = len(item["labels"]) - len(labelled)
            assert item["labels"][:prompt] == [IGNORE_INDEX] * prompt
            assert labelled == item["input_ids"][prompt:]
            assert gpt2_tokenizer.decode(labelled) == f" {reply}<|endoftext|>"
            assert labelled[-1] == eos


def test_context_alternates_roles_so_the_reply_is_the_bots(corpus, gpt2_tokenizer):
    sets = _all_splits(corpus, gpt2_tokenizer, max_length=128)
    examples = next(s for s in sets.values() if any(tuple(s.sources[i]) == (0, 3) for i in range(len(s))))
    index = next(i for i in range(len(examples)) if tuple(examples.sources[i]) == (0, 3))
    text = gpt2_tokenizer.decode(examples[index]["input_ids"])
    assert text == (
        "User: Where are you going?<|endoftext|>Bot: Out.<|endoftext|>"
        "User: Out where?<|endoftext|>Bot: Just out -- okay?<|endoftext|>"
    )


def test_truncation_drops_the_oldest_turns_and_matches_the_shared_format(corpus, gpt2_tokenizer):
    long_turns = [Utterance(f"X{i}", "u0", f"Turn number {i} says something fairly long here.") for i in range(12)]
    corpus.conversations = [Conversation("X0", "m0", long_turns)]
    sets = _all_splits(corpus, gpt2_tokenizer, max_length=48, cache=False)
    examples = next(s for s in sets.values() if len(s))
    last = examples[len(examples) - 1]  # reply = turn 11
    text = gpt2_tokenizer.decode(last["input_ids"])
    assert len(last["input_ids"]) <= 48
    assert "Turn number 10 " in text and "Turn number 0 " not in text
    assert examples.truncated > 0
    texts = [u.text for u in long_turns]
    expected = training_example(format_for(gpt2_tokenizer), exchange_turns(texts)[:-1], texts[-1], 48)
    assert last["input_ids"] == expected.input_ids and last["labels"] == expected.labels


def test_genre_conditioning_and_chat_template(corpus, gpt2_tokenizer, chatml_tokenizer):
    conditioned = _all_splits(corpus, gpt2_tokenizer, max_length=128, genres=True)
    for examples in conditioned.values():
        for i in range(len(examples)):
            movie = corpus.movies[corpus.conversations[int(examples.sources[i][0])].movie_id]
            prefix = gpt2_tokenizer.decode(examples[i]["input_ids"][:12])
            assert prefix.startswith("Genres: ") == bool(movie.genres)
    chat = _all_splits(corpus, chatml_tokenizer, max_length=128)
    item = next(s for s in chat.values() if len(s))[0]
    labelled = [t for t in item["labels"] if t != IGNORE_INDEX]
    assert labelled[-1] == chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_start|>assistant\n" in chatml_tokenizer.decode(item["input_ids"])


def test_empty_turns_are_never_replies_and_cut_the_context(corpus, gpt2_tokenizer):
    turns = [Utterance("E1", "u0", "Hello?"), Utterance("E2", "u1", ""), Utterance("E3", "u0", "Say something."),
             Utterance("E4", "u1", "Fine.")]
    corpus.conversations = [Conversation("E1", "m0", turns)]
    sets = _all_splits(corpus, gpt2_tokenizer, max_length=128, cache=False)
    examples = next(s for s in sets.values() if len(s))
    assert examples.skipped == {"empty_reply": 1, "no_context": 1}
    assert len(examples) == 1
    assert gpt2_tokenizer.decode(examples[0]["input_ids"]) == "User: Say something.<|endoftext|>Bot: Fine.<|endoftext|>"


def test_no_movie_in_two_splits(corpus, gpt2_tokenizer):
    sets = _all_splits(corpus, gpt2_tokenizer, max_length=128)
    movies = {
        split: {corpus.conversations[int(c)].movie_id for c, _ in examples.sources} for split, examples in sets.items()
    }
    assert all(movies.values())
    assert sum(len(m) for m in movies.values()) == len(set().union(*movies.values()))


def test_second_build_is_a_cache_hit(corpus, gpt2_tokenizer, monkeypatch):
    first = build_examples(corpus, gpt2_tokenizer, "train", max_length=128)
    cache_root = Path(dataset_module.cache_dir()) / "datasets"
    assert len(list(cache_root.iterdir())) == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("examples were rebuilt instead of read from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(dataset_module, "_build_all", no_rebuild)
        again = build_examples(load_corpus(CORNELL_MINI), gpt2_tokenizer, "train", max_length=128)
    assert [again[i] for i in range(len(again))] == [first[i] for i in range(len(first))]
    build_examples(corpus, gpt2_tokenizer, "train", max_length=64)  # other settings: another entry
    assert len(list(cache_root.iterdir())) == 2


def test_cache_key_covers_tokenizer_and_corpus(corpus, gpt2_tokenizer, chatml_tokenizer):
    from trainer.dataset import ExampleSettings, dataset_cache_path

    settings = ExampleSettings()
    base = dataset_cache_path(corpus, gpt2_tokenizer, settings)
    assert dataset_cache_path(corpus, chatml_tokenizer, settings) != base
    corpus.conversations = corpus.conversations[1:]
    del corpus.fingerprint  # cached_property: recompute after the edit
    assert dataset_cache_path(corpus, gpt2_tokenizer, settings) != base


def test_bucketed_batches_cover_everything_once_and_pad_less():
    lengths = [(i * 37) % 200 + 5 for i in range(1000)]
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == list(LengthBucketSampler(lengths, batch_size=16, seed=3))  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    assert padding_fraction(lengths, batches) < 0.5 * padding_fraction(lengths, random_batches(1000, 16, seed=3))


def test_largest_batch_first_moves_one_batch_and_keeps_the_rest_in_order():
    lengths = [(i * 37) % 200 + 5 for i in range(1000)]
    plain = list(LengthBucketSampler(lengths, batch_size=16, seed=3))
    first = list(LengthBucketSampler(lengths, batch_size=16, seed=3, largest_first=True))
    cost = lambda batch: len(batch) * max(lengths[i] for i in batch)  # noqa: E731
    assert cost(first[0]) == max(cost(b) for b in plain) and cost(plain[0]) < cost(first[0])
    assert first[1:] == [b for b in plain if b != first[0]]


def test_collator_pads_and_masks():
    batch = Collator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_works_with_a_torch_dataloader(corpus, gpt2_tokenizer):
    examples = build_examples(corpus, gpt2_tokenizer, "train", max_length=128)
    loader = DataLoader(examples, batch_sampler=LengthBucketSampler(examples.lengths, 4, seed=0),
                        collate_fn=Collator(examples.pad_id))
    seen = 0
    for batch in loader:
        assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["labels"].shape
        real = batch["attention_mask"].sum(dim=1).tolist()
        seen += len(real)
        assert all((batch["labels"][row, n:] == IGNORE_INDEX).all() for row, n in enumerate(real))
    assert seen == len(examples)


# --- persona conditioning and recall exchanges ------------------------------------------


def test_persona_examples_name_the_replying_character_and_the_film(corpus, chatml_tokenizer):
    from trainer.cast import name_case, title_case

    sets = _all_splits(corpus, chatml_tokenizer, max_length=256, persona=True, genres=True)
    checked = 0
    for split, examples in sets.items():
        for i in range(len(examples)):
            conv_index, turn = (int(x) for x in examples.sources[i])
            conv = corpus.conversations[conv_index]
            bot = name_case(corpus.characters[conv.utterances[turn].speaker_id].name)
            user = name_case(corpus.characters[conv.utterances[turn - 1].speaker_id].name)
            movie = corpus.movies[conv.movie_id]
            text = chatml_tokenizer.decode(examples[i]["input_ids"])
            assert f"You are {bot} in the movie {title_case(movie.title)}" in text, text
            if split != "train":  # held-out prompts are always complete; training ones may drop parts
                assert f"talking with {user}." in text
            checked += 1
    assert checked == corpus.n_exchanges


def test_persona_dropout_leaves_parts_out_of_training_prompts_only(corpus, chatml_tokenizer):
    full = build_examples(corpus, chatml_tokenizer, "train", max_length=256, persona=True)
    dropped = build_examples(corpus, chatml_tokenizer, "train", max_length=256, persona=True, persona_dropout=0.5)
    texts = [chatml_tokenizer.decode(dropped[i]["input_ids"]) for i in range(len(dropped))]
    assert any("You are a character in" in t for t in texts)
    assert sum(len(dropped[i]["input_ids"]) for i in range(len(dropped))) < full.n_tokens
    val = build_examples(corpus, chatml_tokenizer, "validation", max_length=256, persona=True, persona_dropout=0.5)
    val_full = build_examples(corpus, chatml_tokenizer, "validation", max_length=256, persona=True)
    assert val.n_tokens == val_full.n_tokens


@pytest.mark.parametrize("max_length", [256, 110])  # 110: some exchanges don't fit and must be left out whole
def test_recall_share_adds_synthetic_exchanges_whose_fact_stays_in_the_window(corpus, chatml_tokenizer, max_length):
    plain = build_examples(corpus, chatml_tokenizer, "train", max_length=max_length, persona=True)
    mixed = build_examples(corpus, chatml_tokenizer, "train", max_length=max_length, persona=True, recall_share=0.5)
    synthetic = [i for i in range(len(mixed)) if int(mixed.sources[i][0]) == -1]
    assert len(mixed) - len(plain) == len(synthetic) == round(0.5 * len(plain)) - mixed.skipped["recall_too_long"]
    assert synthetic
    for i in synthetic:
        item = mixed[i]
        prompt = chatml_tokenizer.decode(item["input_ids"][: mixed.prompt_lengths[i]])
        reply = chatml_tokenizer.decode([t for t in item["labels"] if t != IGNORE_INDEX])
        values = [v for kind in FACT_KINDS.values() for v in kind.values if v in reply]
        values += [prompt.split("You are ")[1].split(" in the movie")[0]] if not values else []
        assert values and values[0] in prompt and values[0] in reply, (prompt, reply)  # the answer was said before
    for split in ("validation", "test"):  # held-out sets stay real dialogue
        assert build_examples(corpus, chatml_tokenizer, split, max_length=256, persona=True, recall_share=0.5).n_tokens \
            == build_examples(corpus, chatml_tokenizer, split, max_length=256, persona=True).n_tokens


def test_length_balance_thins_only_short_training_replies_with_chance_words_over_n(corpus, chatml_tokenizer):
    from trainer.dataset import ExampleSettings, _thinned
    from trainer.text_metrics import words

    plain = build_examples(corpus, chatml_tokenizer, "train", max_length=256, persona=True)
    balanced = build_examples(corpus, chatml_tokenizer, "train", max_length=256, persona=True, length_balance=6)
    again = build_examples(corpus, chatml_tokenizer, "train", max_length=256, persona=True, length_balance=6, cache=False)
    n_words = lambda source: len(words(corpus.conversations[source[0]].texts[source[1]]))  # noqa: E731
    kept = {tuple(map(int, s)) for s in balanced.sources}
    every = {tuple(map(int, s)) for s in plain.sources}
    assert kept <= every and len(every) - len(kept) == balanced.skipped["short_reply_thinned"] > 0
    assert all(n_words(s) < 6 for s in every - kept)  # only short replies are left out
    assert {s for s in every if n_words(s) >= 6} <= kept
    assert again.sources.tolist() == balanced.sources.tolist()  # the same draw on every build
    for split in ("validation", "test"):  # held-out sets keep every reply
        assert build_examples(corpus, chatml_tokenizer, split, max_length=256, persona=True, length_balance=6).n_tokens \
            == build_examples(corpus, chatml_tokenizer, split, max_length=256, persona=True).n_tokens
    # The rule itself: a 2-word reply is kept with chance 2/8, a 9-word one always; off at 0.
    settings = ExampleSettings(length_balance=8)
    kept_share = sum(not _thinned("Go home.", "L1", turn, settings) for turn in range(4000)) / 4000
    assert abs(kept_share - 2 / 8) < 0.03
    assert not any(_thinned("one two three four five six seven eight nine", "L1", t, settings) for t in range(200))
    assert not any(_thinned("No.", "L1", t, ExampleSettings()) for t in range(200))
    with pytest.raises(ValueError):
        build_examples(corpus, chatml_tokenizer, "train", length_balance=-1)
