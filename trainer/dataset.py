"""Training examples from the corpus: one per reply, batched by length, cached on disk.

Every turn after the first of a conversation is a reply to learn, with the
turns before it as context. The ids come from the shared dialogue format
(`moviechat_tui.core.dialogue.training_example`), so training sees exactly the ids
chat will send. The context is cut from its oldest turn to fit `max_length`;
labels are IGNORE_INDEX (-100) over the prompt, so only reply tokens count in
the loss.

Use with torch:

    examples = build_examples(corpus, tokenizer, "train", max_length=256)
    loader = DataLoader(examples, batch_sampler=LengthBucketSampler(examples.lengths, 16, seed=0),
                        collate_fn=Collator(examples.pad_id))

With transformers' Trainer: pass `examples` as the dataset and
`Collator(examples.pad_id)` as `data_collator`; plug `LengthBucketSampler` in
by overriding `get_train_dataloader` (or use `group_by_length`).

Tokenized sets are cached under `cache_dir()/datasets/<key>/`, keyed by the
corpus content, the tokenizer (name, size, a hash of its vocabulary and chat
template) and the settings, so a second run loads them in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import weakref
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from moviechat_tui.core.dialogue import IGNORE_INDEX, NO_CONDITIONING, Conditioning, exchange_turns, format_for, training_example
from moviechat_tui.core.paths import cache_dir
from trainer.cast import name_case, title_case
from trainer.corpus import Corpus, corpus_hash
from trainer.recall import recall_exchange
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


class ExampleSet(Dataset):
    """One split's examples: a torch Dataset of {"input_ids": [...], "labels": [...]}.

    Stored flat (int32 ids + offsets + prompt lengths), memory-mapped from the
    cache, so even the full corpus costs little RAM.
    `sources[i]` is (index into corpus.conversations, index of the reply turn).
    """

    def __init__(self, split, ids, offsets, prompt_lengths, sources, pad_id, skipped=None, truncated=0) -> None:
        self.split = split
        self.ids, self.offsets, self.prompt_lengths, self.sources = ids, offsets, prompt_lengths, sources
        self.pad_id = int(pad_id)
        self.skipped = Counter(skipped or {})  # reason -> replies not turned into examples
        self.truncated = int(truncated)  # examples whose context lost its oldest turns

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} out of range ({len(self)} examples)")
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        input_ids = self.ids[start:end].tolist()
        prompt = int(self.prompt_lengths[index])
        return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * prompt + input_ids[prompt:]}

    @cached_property
    def lengths(self) -> list[int]:
        """Tokens per example (what the bucketing sampler sorts by)."""
        return np.diff(self.offsets).tolist()

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    @property
    def n_reply_tokens(self) -> int:
        return self.n_tokens - int(np.sum(self.prompt_lengths, dtype=np.int64))

    def padding_report(self, batch_size: int, seed: int = 0) -> dict[str, float]:
        """Share of padding tokens with length-bucketed vs. random batches of `batch_size`."""
        lengths = self.lengths
        return {
            "bucketed": padding_fraction(lengths, list(LengthBucketSampler(lengths, batch_size, seed=seed))),
            "random": padding_fraction(lengths, random_batches(len(lengths), batch_size, seed=seed)),
        }


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
    conditioning_of: "Callable[[int, int], Conditioning] | None" = None,
) -> ExampleSet:
    """The examples of `split` ("train", "validation", "test"), from the disk cache when possible.

    All three splits are built (and cached) together on a miss; replies that
    cannot be used are counted in `ExampleSet.skipped`: "empty_reply", "no_context"
    (the turn before is empty), "too_long" (the reply alone exceeds max_length).

    `conditioning_of(conversation index, reply turn)` replaces each example's conditioning
    (the persona test uses it to give every conversation another one's); such sets are not cached.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not (0 <= persona_dropout < 1 and 0 <= recall_share <= 1):
        raise ValueError("persona_dropout must be in [0, 1) and recall_share in [0, 1]")
    settings = ExampleSettings(max_length, genres, tuple(float(r) for r in ratios), salt, persona,
                               float(persona_dropout), float(recall_share))
    if conditioning_of is not None:
        cache = False
    directory = dataset_cache_path(corpus, tokenizer, settings)
    if cache and (directory / "meta.json").is_file():
        return _load_split(directory, split)
    built = _build_all(corpus, tokenizer, settings, conditioning_of)
    if not cache:
        return built[split]
    _save(directory, built, corpus, tokenizer, settings)
    return _load_split(directory, split)


def dataset_cache_path(corpus: Corpus, tokenizer, settings: ExampleSettings) -> Path:
    key = {
        "version": DATASET_VERSION,
        "corpus": corpus_hash(corpus),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "format": format_for(tokenizer).name,
        "settings": asdict(settings),
    }
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


def _lower_bound(text_tokens: int) -> int:
    """Fewest prompt tokens a turn of this text can take: its header and separator
    are at least one token, and merging at its edges saves at most two."""
    return max(0, text_tokens - 2) + 1


# --- the disk cache --------------------------------------------------------------

_ARRAYS = ("ids", "offsets", "prompt_lengths", "sources")


def _save(directory: Path, built: dict[str, ExampleSet], corpus: Corpus, tokenizer, settings: ExampleSettings) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        meta = {
            "version": DATASET_VERSION,
            "corpus": corpus_hash(corpus),
            "corpus_source": corpus.source,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "settings": asdict(settings),
            "splits": {},
        }
        for split, examples in built.items():
            for name in _ARRAYS:
                np.save(staging / f"{split}.{name}.npy", getattr(examples, name))
            meta["splits"][split] = {
                "examples": len(examples),
                "pad_id": examples.pad_id,
                "skipped": dict(examples.skipped),
                "truncated": examples.truncated,
            }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(staging, directory)  # atomic: a half-written cache is never seen
        except OSError:
            if not (directory / "meta.json").is_file():  # another process finishing first is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_split(directory: Path, split: str) -> ExampleSet:
    meta = json.loads((directory / "meta.json").read_text())["splits"][split]
    arrays = {name: np.load(directory / f"{split}.{name}.npy", mmap_mode="r") for name in _ARRAYS}
    return ExampleSet(split, pad_id=meta["pad_id"], skipped=meta["skipped"], truncated=meta["truncated"], **arrays)


# --- batching --------------------------------------------------------------------


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length examples, in a random order that depends only on seed and epoch.

    Indices are shuffled, cut into pools of `batch_size * pool_batches`, each
    pool sorted by length and cut into batches, then all batches shuffled. Use
    as `DataLoader(..., batch_sampler=sampler)`; call `set_epoch(n)` for a new
    order each epoch.

    `largest_first` moves the batch with the most tokens (rows x longest row) to
    the front, so that a run that does not fit in memory fails in its first step,
    not hours in, and the run's peak memory shows at once.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 pool_batches: int = 50, drop_last: bool = False, largest_first: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.pool_batches, self.drop_last, self.epoch = pool_batches, drop_last, 0
        self.largest_first = largest_first

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        else:
            order.sort(key=self.lengths.__getitem__)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            rng.shuffle(batches)
        if self.largest_first and batches:
            cost = lambda batch: len(batch) * max(self.lengths[i] for i in batch)  # noqa: E731
            batches.insert(0, batches.pop(max(range(len(batches)), key=lambda k: cost(batches[k]))))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        if self.drop_last:
            pool = self.batch_size * self.pool_batches
            return sum((min(pool, n - s)) // self.batch_size for s in range(0, n, pool))
        pool = self.batch_size * self.pool_batches
        return sum(-(-min(pool, n - s) // self.batch_size) for s in range(0, n, pool))


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain shuffled batches: the baseline that bucketing is measured against."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Padding tokens / all tokens when each batch is padded to its longest example."""
    real = padded = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        real += sum(sizes)
        padded += max(sizes, default=0) * len(sizes)
    return 0.0 if padded == 0 else 1 - real / padded


class Collator:
    """Pads a list of examples on the right: input_ids with pad_id, labels with -100, attention_mask 1/0."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id, self.pad_to_multiple_of = int(pad_id), pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
