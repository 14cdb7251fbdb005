"""The corpus's records: movies, characters, utterances, conversations, as the readers build them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

UNKNOWN_GENDER = "?"


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


class Parsed(NamedTuple):
    """What a reader found in one layout's files, before `load_corpus` keeps what the conversations use."""

    layout: str  # "cornell" or "convokit"
    movies: dict[str, Movie]
    characters: dict[str, Character]
    conversations: list[Conversation]
    speaker_names: dict[str, tuple[str, str]]  # speaker id -> (name, movie id) from its lines, for missing metadata
    skipped: Counter  # reason -> items left out
    repaired: Counter  # reason -> items kept after a fix
