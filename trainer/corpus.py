"""The Cornell Movie-Dialogs Corpus in memory: movies, characters, conversations.

`load_corpus(path)` reads either layout, from a directory or a zip (read in
place, files found at any depth: `trainer.corpus_files`):

* the original release (`cornell_movie_dialogs_corpus.zip`), ` +++$+++ `-separated
  text files in ISO-8859-1: `trainer.read_cornell`;
* ConvoKit's `movie-corpus`, JSON in UTF-8: `trainer.read_convokit`.

Both build the records of `trainer.corpus_records`; `load_corpus` keeps the movies
and characters the conversations use and returns a `Corpus`.

Files are streamed line by line. Nothing malformed stops the load: unusable
lines and references are skipped and counted by reason in `Corpus.skipped`;
things repaired on the way (missing metadata, undecodable bytes) are counted
in `Corpus.repaired`. Empty utterances stay in their conversations (so the
turn order stays true); the training examples skip them as replies.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from trainer.clean import CleanConfig
from trainer.corpus_files import CorpusError, CorpusFiles
from trainer.corpus_records import UNKNOWN_GENDER, Character, Conversation, Movie, Parsed
from trainer.read_convokit import read_convokit
from trainer.read_cornell import read_cornell
from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT, SPLITS, split_movies


@dataclass
class Corpus:
    """Everything the trainer needs, plus what was left out and why."""

    movies: dict[str, Movie]  # movies with at least one conversation
    characters: dict[str, Character]  # characters with at least one utterance in a conversation
    conversations: list[Conversation]
    skipped: Counter = field(default_factory=Counter)  # reason -> items left out
    repaired: Counter = field(default_factory=Counter)  # reason -> items kept after a fix
    source: str = ""
    layout: str = ""  # "cornell" or "convokit"

    @property
    def n_utterances(self) -> int:
        return sum(len(c.utterances) for c in self.conversations)

    @property
    def n_exchanges(self) -> int:
        """(context, reply) pairs: every turn after the first of a conversation."""
        return sum(len(c.utterances) - 1 for c in self.conversations)

    def split_of_movies(self, ratios=DEFAULT_RATIOS, salt: str = DEFAULT_SALT) -> dict[str, str]:
        return split_movies(self.movies, ratios, salt)

    def conversations_in(self, split: str, ratios=DEFAULT_RATIOS, salt: str = DEFAULT_SALT) -> list[Conversation]:
        """The conversations of the movies in `split` ("train", "validation" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        movie_split = self.split_of_movies(ratios, salt)
        return [c for c in self.conversations if movie_split[c.movie_id] == split]

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the content (after cleaning): a cache key that changes when any line does.

        Computed once; a Corpus edited after that needs `del corpus.fingerprint`.
        """
        h = hashlib.sha256(b"moviechat-corpus-v1\0")
        for movie in sorted(self.movies.values(), key=lambda m: m.id):
            h.update(f"{movie.id}\0{movie.title}\0{movie.year}\0{','.join(movie.genres)}\n".encode())
        for conv in self.conversations:
            h.update(f"{conv.id}\0{conv.movie_id}\n".encode())
            for u in conv.utterances:
                h.update(f"{u.id}\0{u.speaker_id}\0{u.text}\n".encode())
        return h.hexdigest()

    def stats(self, tokenizer=None, ratios=DEFAULT_RATIOS, salt: str = DEFAULT_SALT, top_genres: int = 10) -> dict:
        """Counts for reports: totals, per split, genres, turn lengths (tokens with a tokenizer, else words)."""
        movie_split = self.split_of_movies(ratios, salt)
        texts = [u.text for c in self.conversations for u in c.utterances]
        lengths = _token_lengths(texts, tokenizer) if tokenizer is not None else [len(t.split()) for t in texts]
        splits = {name: {"movies": 0, "conversations": 0, "utterances": 0, "exchanges": 0, "tokens": 0} for name in SPLITS}
        for split in movie_split.values():
            splits[split]["movies"] += 1
        at = 0
        for conv in self.conversations:
            row = splits[movie_split[conv.movie_id]]
            n = len(conv.utterances)
            row["conversations"] += 1
            row["utterances"] += n
            row["exchanges"] += n - 1
            row["tokens"] += sum(lengths[at : at + n])
            at += n
        if tokenizer is None:
            for row in splits.values():
                row["words"] = row.pop("tokens")
        genres = Counter(g for m in self.movies.values() for g in m.genres)
        return {
            "source": self.source,
            "layout": self.layout,
            "movies": len(self.movies),
            "characters": len(self.characters),
            "conversations": len(self.conversations),
            "utterances": len(texts),
            "exchanges": self.n_exchanges,
            "empty_utterances": sum(1 for t in texts if not t),
            "splits": splits,
            "top_genres": dict(genres.most_common(top_genres)),
            "turn_length_unit": "tokens" if tokenizer is not None else "words",
            "turn_lengths": _histogram(lengths, (0, 1, 5, 9, 17, 33, 65, 129)),
            "turn_length_percentiles": _percentiles(lengths),
            "turns_per_conversation": _histogram([len(c.utterances) for c in self.conversations], (2, 3, 4, 5, 9, 17)),
            "skipped": dict(sorted(self.skipped.items())),
            "repaired": dict(sorted(self.repaired.items())),
        }


def corpus_hash(corpus: Corpus) -> str:
    """The corpus's content fingerprint (see `Corpus.fingerprint`)."""
    return corpus.fingerprint


def load_corpus(path: str | os.PathLike, clean: CleanConfig = CleanConfig()) -> Corpus:
    """Read a corpus directory or zip in either layout; raise CorpusError if there is none."""
    with CorpusFiles.open_path(Path(path)) as files:
        if files.find("movie_lines.txt"):
            reader = read_cornell
        elif files.find("utterances.jsonl"):
            reader = read_convokit
        else:
            raise CorpusError(
                f"no corpus files in {path}: expected movie_lines.txt (Cornell release) or utterances.jsonl (ConvoKit)"
            )
        # Hundreds of thousands of new objects and no cycles among them: the
        # cyclic collector would only rescan them over and over (~25% of the time).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return _assemble(files, reader(files, clean))
        finally:
            if gc_was_enabled:
                gc.enable()


def _assemble(files: CorpusFiles, parsed: Parsed) -> Corpus:
    """Keep the movies and characters the conversations use; fill in missing metadata."""
    movies, characters, conversations = parsed.movies, parsed.characters, parsed.conversations
    speaker_names, skipped, repaired = parsed.speaker_names, parsed.skipped, parsed.repaired
    used_movies: dict[str, Movie] = {}
    for conv in conversations:
        if conv.movie_id not in used_movies:
            if conv.movie_id not in movies:
                repaired["movie_metadata_missing"] += 1
            used_movies[conv.movie_id] = movies.get(conv.movie_id) or Movie(conv.movie_id, "", None, ())
    used_characters: dict[str, Character] = {}
    for conv in conversations:
        for u in conv.utterances:
            if u.speaker_id in used_characters:
                continue
            character = characters.get(u.speaker_id)
            if character is None:
                repaired["character_metadata_missing"] += 1
                name, movie_id = speaker_names.get(u.speaker_id, ("", conv.movie_id))
                character = Character(u.speaker_id, name, UNKNOWN_GENDER, movie_id)
            used_characters[u.speaker_id] = character
    if unused := len(movies.keys() - used_movies.keys()):
        skipped["movie_without_conversations"] += unused
    if unused := len(characters.keys() - used_characters.keys()):
        skipped["character_without_lines"] += unused
    return Corpus(used_movies, used_characters, conversations, skipped, repaired, str(files.path), parsed.layout)


# --- stats helpers -----------------------------------------------------------


def _token_lengths(texts: list[str], tokenizer, chunk: int = 8192) -> list[int]:
    lengths: list[int] = []
    for start in range(0, len(texts), chunk):
        batch = tokenizer(texts[start : start + chunk], add_special_tokens=False, return_attention_mask=False)
        lengths.extend(len(ids) for ids in batch["input_ids"])
    return lengths


def _histogram(values: list[int], edges: tuple[int, ...]) -> dict[str, int]:
    """Counts per bucket [edges[i], edges[i+1]); the last bucket is open-ended."""
    labels = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        labels.append(f"{low}+" if high is None else (str(low) if high == low else f"{low}-{high}"))
    counts = dict.fromkeys(labels, 0)
    for value in values:
        counts[labels[max(0, bisect.bisect_right(edges, value) - 1)]] += 1
    return counts


def _percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}
