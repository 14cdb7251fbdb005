"""Training examples from the corpus: one per reply, built once and cached on disk.

Every turn after the first of a conversation is a reply to learn, with the
turns before it as context. The ids come from the shared dialogue format
(`moviechat_tui.core.dialogue.training_example`), so training sees exactly the ids
chat will send. The context is cut from its oldest turn to fit `max_length`;
labels are IGNORE_INDEX (-100) over the prompt, so only reply tokens count in
the loss.

    examples = build_examples(corpus, tokenizer, "train", max_length=256)  # an ExampleSet (trainer.example_set)

Batch them with `trainer.batching` (LengthBucketSampler, Collator). Tokenized
sets are cached under `cache_dir()/datasets/<key>/`, keyed by the corpus
content, the tokenizer (name, size, a hash of its vocabulary and chat template)
and the settings, so a second run loads them in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import random
import weakref
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from moviechat_tui.core.dialogue import NO_CONDITIONING, Conditioning, exchange_turns, format_for, training_example
from moviechat_tui.core.paths import cache_dir
from trainer.batching import Collator  # noqa: F401  (re-exported: bench/train.py imports it from here)
from trainer.cast import name_case, title_case
from trainer.corpus import Corpus, corpus_hash
from trainer.example_set import ExampleSet, load_example_set, save_example_sets
from trainer.recall import recall_exchange
from trainer.text_metrics import words
from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT, SPLITS

DATASET_VERSION = 2  # bump when the way examples are built changes


@dataclass(frozen=True)
class ExampleSettings:
    """Everything besides corpus and tokenizer that shapes the examples (part of the cache key)."""

    max_length: int = 256
    genres: bool = False  # condition on the movie's genres (Conditioning.from_genres)
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    salt: str = DEFAULT_SALT
    persona: bool = False  # name the bot's character, the user's character and the film
    persona_dropout: float = 0.0  # train split only: each persona part left out with this chance
    recall_share: float = 0.0  # train split only: synthetic recall exchanges per real example
    length_balance: int = 0  # train split only: a reply of w < N words is kept with chance w/N (0 = off)


def example_conditioning(corpus: Corpus, conv, turn: int, settings: ExampleSettings,
                         rng: random.Random | None = None) -> Conditioning:
    """The conditioning of reply `turn` of `conv`: its speaker is the bot, the previous line's the user.

    With `rng` (training examples), each part is dropped with `settings.persona_dropout`, so a
    chat that names only some of them (or none) is what the model has seen too."""
    if not settings.persona:
        return Conditioning.from_genres(corpus.movies[conv.movie_id].genres) if settings.genres else NO_CONDITIONING
    movie = corpus.movies[conv.movie_id]
    bot_id = conv.utterances[turn].speaker_id
    user_id = conv.utterances[turn - 1].speaker_id if turn > 0 else ""
    name = lambda char_id: name_case(corpus.characters[char_id].name) if char_id in corpus.characters else ""  # noqa: E731
    keep = (lambda: rng.random() >= settings.persona_dropout) if rng else (lambda: True)  # noqa: E731
    film = keep()
    return Conditioning(
        character=name(bot_id) if keep() else "",
        partner=name(user_id) if user_id != bot_id and keep() else "",
        movie=title_case(movie.title) if film else "",
        year=movie.year if film else None,
        genres=movie.genres if settings.genres and keep() else (),
    )


# --- building ------------------------------------------------------------------


def build_examples(
    corpus: Corpus,
    tokenizer,
    split: str = "train",
    max_length: int = 256,
    genres: bool = False,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    salt: str = DEFAULT_SALT,
    cache: bool = True,
    persona: bool = False,
    persona_dropout: float = 0.0,
    recall_share: float = 0.0,
    length_balance: int = 0,
    conditioning_of: "Callable[[int, int], Conditioning] | None" = None,
) -> ExampleSet:
    """The examples of `split` ("train", "validation", "test"), from the disk cache when possible.

    All three splits are built (and cached) together on a miss; replies that
    cannot be used are counted in `ExampleSet.skipped`: "empty_reply", "no_context"
    (the turn before is empty), "too_long" (the reply alone exceeds max_length), and in the
    train split with `length_balance` N, "short_reply_thinned" (a reply of w < N words is kept
    with chance w/N: sampled at the chat's temperature, a model trained on the corpus as it is
    answers shorter than the films do, and the short replies are also the ones that repeat).

    `conditioning_of(conversation index, reply turn)` replaces each example's conditioning
    (the persona test uses it to give every conversation another one's); such sets are not cached.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not (0 <= persona_dropout < 1 and 0 <= recall_share <= 1 and length_balance >= 0):
        raise ValueError("persona_dropout must be in [0, 1), recall_share in [0, 1] and length_balance >= 0")
    settings = ExampleSettings(max_length, genres, tuple(float(r) for r in ratios), salt, persona,
                               float(persona_dropout), float(recall_share), int(length_balance))
    if conditioning_of is not None:
        cache = False
    directory = dataset_cache_path(corpus, tokenizer, settings)
    if cache and (directory / "meta.json").is_file():
        return load_example_set(directory, split)
    built = _build_all(corpus, tokenizer, settings, conditioning_of)
    if not cache:
        return built[split]
    save_example_sets(directory, built, {
        "version": DATASET_VERSION,
        "corpus": corpus_hash(corpus),
        "corpus_source": corpus.source,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "settings": asdict(settings),
    })
    return load_example_set(directory, split)


def dataset_cache_path(corpus: Corpus, tokenizer, settings: ExampleSettings) -> Path:
    key = {
        "version": DATASET_VERSION,
        "corpus": corpus_hash(corpus),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "format": format_for(tokenizer).name,
        "settings": asdict(settings),
    }
    if not settings.length_balance:  # keys of sets built before the setting existed stay valid
        del key["settings"]["length_balance"]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / "datasets" / digest[:32]


_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> (state, fingerprint)


def tokenizer_fingerprint(tokenizer) -> str:
    """name_or_path + vocabulary size + SHA-256 of the vocabulary, special tokens and chat template."""
    specials = [tokenizer.eos_token, tokenizer.pad_token, getattr(tokenizer, "chat_template", None)]
    state = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), json.dumps(specials))
    try:
        cached = _FINGERPRINTS.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached and cached[0] == state:
        return cached[1]
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(state[2].encode())
    fingerprint = f"{state[0]}|{state[1]}|{h.hexdigest()}"
    try:
        _FINGERPRINTS[tokenizer] = (state, fingerprint)
    except TypeError:
        pass
    return fingerprint


class _MemoTokenizer:
    """The tokenizer with `encode` memoised (bounded): a context repeats the same
    turns in every later example of its conversation. Everything else passes through."""

    def __init__(self, tokenizer, size: int = 1 << 16) -> None:
        self._tokenizer = tokenizer
        self._encode = lru_cache(maxsize=size)(lambda text, special: tuple(tokenizer.encode(text, add_special_tokens=special)))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._encode(text, add_special_tokens))

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __len__(self) -> int:
        return len(self._tokenizer)


def _build_all(corpus: Corpus, tokenizer, settings: ExampleSettings, conditioning_of=None) -> dict[str, ExampleSet]:
    fmt = format_for(_MemoTokenizer(tokenizer))
    movie_split = corpus.split_of_movies(settings.ratios, settings.salt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.end_of_turn_id
    # Token counts of each text, to drop context turns that cannot fit before
    # asking the format (which re-encodes the context once per dropped turn).
    texts = sorted({u.text for c in corpus.conversations for u in c.utterances})
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    text_tokens = {text: len(ids) for text, ids in zip(texts, encoded)}

    # array("i"): 4 bytes per id while building (a list of ints would take ~36)
    parts = {s: {"ids": array("i"), "lengths": [], "prompts": [], "sources": [], "skipped": Counter(), "truncated": 0} for s in SPLITS}
    for conv_index, conv in enumerate(corpus.conversations):
        split = movie_split[conv.movie_id]
        part = parts[split]
        lines = conv.texts
        start = 0  # the context never reaches back past an empty (silent or lost) turn
        for turn in range(1, len(lines)):
            if not lines[turn - 1]:
                start = turn
            reply = lines[turn]
            if not reply:
                part["skipped"]["empty_reply"] += 1
                continue
            if start == turn:
                part["skipped"]["no_context"] += 1
                continue
            if split == "train" and _thinned(reply, conv.id, turn, settings):
                part["skipped"]["short_reply_thinned"] += 1
                continue
            budget = settings.max_length - _lower_bound(text_tokens[reply])
            first = turn
            while first > start and budget - _lower_bound(text_tokens[lines[first - 1]]) >= 0:
                first -= 1
                budget -= _lower_bound(text_tokens[lines[first]])
            first = min(first, turn - 1)  # always offer the newest turn; the format decides
            context = exchange_turns(lines[first : turn + 1])[:-1]
            if conditioning_of is not None:
                conditioning = conditioning_of(conv_index, turn)
            else:
                rng = random.Random(f"{settings.salt}:{conv.id}:{turn}") if split == "train" else None
                conditioning = example_conditioning(corpus, conv, turn, settings, rng)
            try:
                example = training_example(fmt, context, reply, settings.max_length, conditioning)
            except ValueError:  # fit_prompt: not even an empty turn fits beside the reply
                example = None
            if example is None:
                part["skipped"]["too_long"] += 1
                continue
            if example.dropped_turns or first > start:
                part["truncated"] += 1
            part["ids"].extend(example.input_ids)
            part["lengths"].append(len(example.input_ids))
            part["prompts"].append(example.prompt_length)
            part["sources"].append((conv_index, turn))

    if settings.recall_share > 0:
        _add_recall_examples(parts["train"], fmt, corpus, settings, movie_split)

    return {
        split: ExampleSet(
            split,
            np.frombuffer(p["ids"], dtype=np.int32).copy() if p["ids"] else np.zeros(0, dtype=np.int32),
            np.concatenate([[0], np.cumsum(p["lengths"], dtype=np.int64)]).astype(np.int64),
            np.asarray(p["prompts"], dtype=np.int32),
            np.asarray(p["sources"], dtype=np.int32).reshape(-1, 2),
            pad_id,
            p["skipped"],
            p["truncated"],
        )
        for split, p in parts.items()
    }


def _add_recall_examples(part: dict, fmt, corpus: Corpus, settings: ExampleSettings, movie_split) -> None:
    """recall_share x (real examples) synthetic recall exchanges (trainer.recall), with personas and
    filler exchanges from training films; sources (-1, k) mark them."""
    train = [(i, c) for i, c in enumerate(corpus.conversations) if movie_split[c.movie_id] == "train"]
    fillers = [(c.texts[t - 1], c.texts[t]) for _, c in train for t in range(1, len(c.texts))
               if c.texts[t - 1] and c.texts[t] and len(c.texts[t - 1]) + len(c.texts[t]) < 160]
    wanted = round(settings.recall_share * len(part["lengths"]))
    if not train or not wanted:
        return
    rng = random.Random(f"{settings.salt}:recall")
    for k in range(wanted):
        _, conv = rng.choice(train)
        turn = rng.randrange(1, len(conv.utterances))
        conditioning = example_conditioning(corpus, conv, turn, settings, rng)
        exchange = recall_exchange(rng, fillers, conditioning)
        example = training_example(fmt, exchange.context, exchange.reply, settings.max_length, conditioning)
        if example is None or example.dropped_turns:  # the fact must stay in the window
            part["skipped"]["recall_too_long"] += 1
            continue
        part["ids"].extend(example.input_ids)
        part["lengths"].append(len(example.input_ids))
        part["prompts"].append(example.prompt_length)
        part["sources"].append((-1, k))


def _thinned(reply: str, conv_id: str, turn: int, settings: ExampleSettings) -> bool:
    """Whether length balancing leaves this training reply out (the same draw on every build)."""
    n = settings.length_balance
    if not n:
        return False
    w = len(words(reply))
    return w < n and random.Random(f"{settings.salt}:length:{conv_id}:{turn}").random() >= w / n


def _lower_bound(text_tokens: int) -> int:
    """Fewest prompt tokens a turn of this text can take: its header and separator
    are at least one token, and merging at its edges saves at most two."""
    return max(0, text_tokens - 2) + 1
