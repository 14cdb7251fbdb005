"""The Cornell Movie-Dialogs Corpus in memory: movies, characters, conversations.

`load_corpus(path)` reads either layout, from a directory or a zip (read in
place, files found at any depth, macOS `__MACOSX` debris ignored):

* the original release (`cornell_movie_dialogs_corpus.zip`): `movie_lines.txt`,
  `movie_conversations.txt`, `movie_titles_metadata.txt`,
  `movie_characters_metadata.txt`; fields separated by ` +++$+++ `, text in
  ISO-8859-1. A conversation lists its line ids in spoken order; the lines file
  itself is in descending id order, so order always comes from that list.
* ConvoKit's `movie-corpus`: `utterances.jsonl` (one utterance per line, with
  `reply_to`), `conversations.json` (movie metadata per conversation),
  `speakers.json` (character metadata); UTF-8. Utterances are ordered by
  following `reply_to` from the root, or by their numeric id when that chain
  is broken.

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
import json
import os
import re
import sys
import zipfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import IO, Iterator, NamedTuple

from trainer.clean import CleanConfig, clean_text
from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT, SPLITS, split_movies

ORIGINAL_FILES = ("movie_lines.txt", "movie_conversations.txt", "movie_titles_metadata.txt", "movie_characters_metadata.txt")
CONVOKIT_FILES = ("utterances.jsonl", "conversations.json", "speakers.json")
SEPARATOR = "+++$+++"
SPACED_SEPARATOR = " +++$+++ "
ORIGINAL_ENCODING = "iso-8859-1"
UNKNOWN_GENDER = "?"


class CorpusError(Exception):
    """The corpus cannot be read at all (missing path, no corpus files, broken zip)."""


@dataclass(frozen=True, slots=True)
class Movie:
    id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Character:
    id: str
    name: str
    gender: str  # "f", "m" or "?" (unknown)
    movie_id: str


class Utterance(NamedTuple):  # a tuple: 300k of them load fast and stay small
    id: str
    speaker_id: str
    text: str  # cleaned; may be "" (a silent or lost line)


@dataclass(slots=True)
class Conversation:
    id: str
    movie_id: str
    utterances: list[Utterance]  # in spoken order

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.utterances]


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
    with _Source.open_path(Path(path)) as source:
        if source.find("movie_lines.txt"):
            reader = _read_original
        elif source.find("utterances.jsonl"):
            reader = _read_convokit
        else:
            raise CorpusError(
                f"no corpus files in {path}: expected movie_lines.txt (Cornell release) or utterances.jsonl (ConvoKit)"
            )
        # Hundreds of thousands of new objects and no cycles among them: the
        # cyclic collector would only rescan them over and over (~25% of the time).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return reader(source, clean)
        finally:
            if gc_was_enabled:
                gc.enable()


# --- where the files are -----------------------------------------------------


class _Source:
    """A directory or a zip whose files are found by name at any depth."""

    def __init__(self, path: Path, names: list[str], zf: zipfile.ZipFile | None = None) -> None:
        self.path, self.zip = path, zf
        self._by_name: dict[str, str] = {}
        usable = (n for n in names if "__MACOSX" not in PurePosixPath(n).parts and not PurePosixPath(n).name.startswith("._"))
        for name in sorted(usable, key=lambda n: (n.count("/"), n)):  # the shallowest copy wins
            self._by_name.setdefault(PurePosixPath(name).name, name)

    @classmethod
    @contextmanager
    def open_path(cls, path: Path) -> Iterator["_Source"]:
        if not path.exists():
            raise CorpusError(f"corpus path {path} does not exist")
        if path.is_dir():
            names = [str(PurePosixPath(*(Path(root) / f).relative_to(path).parts)) for root, _, files in os.walk(path) for f in files]
            yield cls(path, names)
            return
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorpusError(f"{path} is neither a directory nor a readable zip file ({exc})") from None
        with zf:
            yield cls(path, [i.filename for i in zf.infolist() if not i.is_dir()], zf)

    def find(self, name: str) -> str | None:
        return self._by_name.get(name)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        member = self._by_name[name]
        try:
            with (self.zip.open(member) if self.zip else open(self.path / member, "rb")) as f:
                yield f
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise CorpusError(f"cannot read {member} in {self.path}: {exc}") from None


# --- the original release ----------------------------------------------------


def _records(source: _Source, name: str, n_fields: int, kind: str, skipped: Counter) -> Iterator[list[str]]:
    """The fields of each usable line of an original-format file, streamed."""
    if not source.find(name):
        return
    with source.open(name) as f:
        for raw in f:
            line = raw.decode(ORIGINAL_ENCODING)  # every byte decodes; cleaning fixes the odd ones
            if not line.strip():
                skipped["blank_line"] += 1
                continue
            fields = line.rstrip("\r\n").split(SPACED_SEPARATOR)
            if len(fields) != n_fields:  # tolerate a separator that lost its spaces
                fields = [part.strip() for part in line.split(SEPARATOR)]
            if len(fields) != n_fields or not fields[0]:
                skipped[f"malformed_{kind}_line"] += 1
                continue
            yield fields


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_YEAR = re.compile(r"\d{4}")


def _quoted_list(text: str) -> list[str] | None:
    """["a", "b"] from "['a', 'b']"; None when it is not such a list."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    return [a or b for a, b in _QUOTED.findall(text)]


def _year(text: str) -> int | None:
    match = _YEAR.search(text or "")
    return int(match.group()) if match else None


def _gender(text: str) -> str:
    text = (text or "").strip().lower()
    return text if text in ("f", "m") else UNKNOWN_GENDER


def _read_original(source: _Source, clean: CleanConfig) -> Corpus:
    skipped, repaired = Counter(), Counter()
    intern = sys.intern

    movies: dict[str, Movie] = {}
    for movie_id, title, year, _rating, _votes, genres in _records(source, "movie_titles_metadata.txt", 6, "movie", skipped):
        genre_list = _quoted_list(genres)
        if genre_list is None:
            skipped["malformed_movie_line"] += 1
            continue
        movies[movie_id] = Movie(intern(movie_id), title, _year(year), tuple(g.strip().lower() for g in genre_list if g.strip()))

    characters: dict[str, Character] = {}
    for char_id, name, movie_id, _title, gender, _credit in _records(source, "movie_characters_metadata.txt", 6, "character", skipped):
        characters[char_id] = Character(intern(char_id), name, _gender(gender), intern(movie_id))

    lines: dict[str, Utterance] = {}
    speaker_names: dict[str, tuple[str, str]] = {}
    for line_id, char_id, movie_id, name, text in _records(source, "movie_lines.txt", 5, "utterance", skipped):
        if line_id in lines:
            skipped["duplicate_utterance_id"] += 1
            continue
        lines[line_id] = Utterance(line_id, intern(char_id), clean_text(text, clean))
        speaker_names.setdefault(char_id, (name, movie_id))

    conversations: list[Conversation] = []
    used: set[str] = set()
    for _c1, _c2, movie_id, id_list in _records(source, "movie_conversations.txt", 4, "conversation", skipped):
        ids = _quoted_list(id_list)
        if not ids:
            skipped["malformed_conversation_line"] += 1
            continue
        # A missing line cuts the conversation: joining across the gap would
        # pair a reply with a line it never answered.
        pieces: list[list[Utterance]] = [[]]
        for line_id in ids:
            if line_id in lines:
                pieces[-1].append(lines[line_id])
            else:
                skipped["missing_utterance"] += 1
                if pieces[-1]:
                    pieces.append([])
        for piece in pieces:
            if len(piece) < 2:
                if piece:
                    skipped["short_conversation"] += 1
                continue
            conv_id = ids[0] if piece[0].id == ids[0] else f"{ids[0]}@{piece[0].id}"
            conversations.append(Conversation(conv_id, intern(movie_id), piece))
            used.update(u.id for u in piece)
    if unused := len(lines.keys() - used):
        skipped["utterance_not_in_conversation"] += unused

    if not lines and not conversations:
        raise CorpusError(f"no usable lines in {source.path}: movie_lines.txt has no line in the expected format")
    return _assemble(source, "cornell", movies, characters, conversations, speaker_names, skipped, repaired)


# --- ConvoKit's movie-corpus -------------------------------------------------


def _decode_utf8(raw: bytes, repaired: Counter) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        repaired["undecodable_bytes"] += 1
        return raw.decode("utf-8", errors="replace")  # U+FFFD, which cleaning handles


def _json_file(source: _Source, name: str, repaired: Counter) -> dict:
    if not source.find(name):
        return {}
    with source.open(name) as f:
        text = _decode_utf8(f.read(), repaired)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{name} in {source.path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CorpusError(f"{name} in {source.path} is not a JSON object of id -> record")
    return data


def _line_number(utterance_id: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", utterance_id)
    return (int(digits) if digits else sys.maxsize, utterance_id)


def _meta(record) -> dict:
    meta = record.get("meta") if isinstance(record, dict) else None
    return meta if isinstance(meta, dict) else {}


def _read_convokit(source: _Source, clean: CleanConfig) -> Corpus:
    skipped, repaired = Counter(), Counter()
    intern = sys.intern

    characters: dict[str, Character] = {}
    speakers_file = "speakers.json" if source.find("speakers.json") else "users.json"  # older ConvoKit name
    for speaker_id, record in _json_file(source, speakers_file, repaired).items():
        meta = _meta(record)
        characters[speaker_id] = Character(
            intern(speaker_id), str(meta.get("character_name") or ""), _gender(meta.get("gender")), intern(str(meta.get("movie_idx") or ""))
        )

    movies: dict[str, Movie] = {}
    conversation_movie: dict[str, str] = {}
    for conv_id, record in _json_file(source, "conversations.json", repaired).items():
        meta = _meta(record)
        movie_id = str(meta.get("movie_idx") or "")
        if not movie_id:
            continue
        conversation_movie[conv_id] = intern(movie_id)
        if movie_id not in movies:
            genres = meta.get("genre")
            genre_list = genres if isinstance(genres, list) else (_quoted_list(str(genres or "[]")) or [])
            movies[movie_id] = Movie(
                intern(movie_id), str(meta.get("movie_name") or ""), _year(str(meta.get("release_year") or "")),
                tuple(str(g).strip().lower() for g in genre_list if str(g).strip()),
            )

    # conversation id -> [(utterance, reply_to)], in file order
    grouped: dict[str, list[tuple[Utterance, str | None]]] = defaultdict(list)
    utterance_movie: dict[str, str] = {}
    seen: set[str] = set()
    with source.open("utterances.jsonl") as f:
        for raw in f:
            line = _decode_utf8(raw, repaired)
            if not line.strip():
                skipped["blank_line"] += 1
                continue
            try:
                record = json.loads(line)
                utt_id, conv_id, text = record["id"], record["conversation_id"], record.get("text")
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped["malformed_utterance_line"] += 1
                continue
            if not isinstance(utt_id, str) or not isinstance(conv_id, str) or not isinstance(text, (str, type(None))):
                skipped["malformed_utterance_line"] += 1
                continue
            if utt_id in seen:
                skipped["duplicate_utterance_id"] += 1
                continue
            seen.add(utt_id)
            reply_to = record.get("reply_to", record.get("reply-to"))
            speaker = intern(str(record.get("speaker") or record.get("user") or ""))  # "user": older ConvoKit
            grouped[conv_id].append((Utterance(utt_id, speaker, clean_text(text or "", clean)), reply_to))
            movie_id = _meta(record).get("movie_id")
            if movie_id and conv_id not in utterance_movie:
                utterance_movie[conv_id] = intern(str(movie_id))

    conversations: list[Conversation] = []
    listed = [c for c in conversation_movie if c in grouped]  # conversations.json's order first
    for conv_id in listed + [c for c in grouped if c not in conversation_movie]:
        members = grouped[conv_id]
        if len(members) < 2:
            skipped["short_conversation"] += 1
            continue
        ordered = _reply_chain(members)
        if ordered is None:
            repaired["reply_chain_broken"] += 1
            ordered = [u for u, _ in sorted(members, key=lambda m: _line_number(m[0].id))]
        movie_id = conversation_movie.get(conv_id) or utterance_movie.get(conv_id) or ""
        if not movie_id:
            skipped["conversation_without_movie"] += 1
            continue
        conversations.append(Conversation(conv_id, movie_id, ordered))

    if not conversations and not seen:
        raise CorpusError(f"no usable utterances in {source.path}: utterances.jsonl has no line in the expected format")
    return _assemble(source, "convokit", movies, characters, conversations, {}, skipped, repaired)


def _reply_chain(members: list[tuple[Utterance, str | None]]) -> list[Utterance] | None:
    """The utterances from the root along reply_to links, or None unless that is one unbroken chain."""
    by_id = {u.id: u for u, _ in members}
    roots = [u for u, parent in members if parent is None or parent not in by_id]
    children: dict[str, list[Utterance]] = defaultdict(list)
    for u, parent in members:
        if parent in by_id:
            children[parent].append(u)
    if len(roots) != 1:
        return None
    chain = [roots[0]]
    while len(chain) <= len(members):
        nxt = children.get(chain[-1].id, [])
        if len(nxt) != 1:
            break
        chain.append(nxt[0])
    return chain if len(chain) == len(members) and not children.get(chain[-1].id) else None


# --- both layouts ------------------------------------------------------------


def _assemble(source, layout, movies, characters, conversations, speaker_names, skipped, repaired) -> Corpus:
    """Keep the movies and characters the conversations use; fill in missing metadata."""
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
    return Corpus(used_movies, used_characters, conversations, skipped, repaired, str(source.path), layout)


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
