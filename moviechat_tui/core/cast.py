"""The shipped cast: 617 films and their 9,035 characters, to pick who the bot plays.

    cast = load_cast()
    cast.find_movies("10 things")            # [Movie(title="10 Things I Hate About You", year=1999, ...)]
    cast.persona("Bianca", movie="10 things", partner="Cameron")  # a Conditioning, or CastError

Built from the corpus metadata by `moviechat-train cast` into assets/cast.json. Matching is
case- and accent-insensitive; an unknown name raises CastError whose one-line message lists the
closest matches.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .dialogue import Conditioning
from .paths import ASSETS_DIR

CAST_VERSION = 1
CAST_FILE = ASSETS_DIR / "cast.json"


class CastError(ValueError):
    """An unknown or ambiguous film or character (one line, with the closest matches)."""


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    gender: str  # "f", "m" or "?"
    credit: int | None  # position in the credits, when known


@dataclass(frozen=True)
class Movie:
    id: str
    title: str
    year: int | None
    genres: tuple[str, ...]
    characters: tuple[Character, ...]

    @property
    def label(self) -> str:
        return f"{self.title} ({self.year})" if self.year else self.title


def fold(text: str) -> str:
    """Lower-case, accents and punctuation dropped, spaces collapsed: what two spellings share."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def _closest(query: str, names: list[str], n: int = 5) -> list[str]:
    by_fold: dict[str, str] = {}
    for name in names:
        by_fold.setdefault(fold(name), name)
    return [by_fold[f] for f in difflib.get_close_matches(fold(query), list(by_fold), n=n, cutoff=0.5)]


class Cast:
    def __init__(self, movies: list[Movie]) -> None:
        self.movies = movies

    @classmethod
    def from_json(cls, data: dict) -> "Cast":
        if not isinstance(data, dict) or data.get("version") != CAST_VERSION or not isinstance(data.get("movies"), list):
            raise CastError(f"not a moviechat cast file (version {CAST_VERSION})")
        return cls([Movie(m["id"], m["title"], m.get("year"), tuple(m.get("genres") or ()),
                          tuple(Character(c["id"], c["name"], c.get("gender", "?"), c.get("credit"))
                                for c in m.get("characters") or ()))
                    for m in data["movies"]])

    @property
    def n_characters(self) -> int:
        return sum(len(m.characters) for m in self.movies)

    def find_movies(self, query: str = "") -> list[Movie]:
        """Films whose title (or "title year") contains every word of `query`; exact titles first."""
        words = fold(query).split()
        hits = [m for m in self.movies if all(w in fold(f"{m.title} {m.year or ''}") for w in words)]
        return sorted(hits, key=lambda m: (fold(m.title) != fold(query), m.title.lower(), m.year or 0))

    def movie(self, query: str) -> Movie:
        """The one film `query` names: an exact title (or "Title (year)"), else the only film containing it."""
        q = fold(query)
        exact = [m for m in self.movies if q in (fold(m.title), fold(m.label))]
        hits = exact or self.find_movies(query)
        if len(hits) == 1:
            return hits[0]
        if not hits:
            close = _closest(query, [m.label for m in self.movies])
            raise CastError(f"no film called {query!r} in the cast"
                            + (f"; closest: {', '.join(close)}" if close else "; try `moviechat-tui characters`"))
        raise CastError(f"{query!r} matches {len(hits)} films: {', '.join(m.label for m in hits[:6])}"
                        f"{', ...' if len(hits) > 6 else ''}; say which with its full title")

    def find_characters(self, query: str = "", movie: Movie | None = None) -> list[tuple[Movie, Character]]:
        """(film, character) pairs whose name contains every word of `query`, in `movie` or in any film."""
        words = fold(query).split()
        movies = [movie] if movie else self.movies
        return [(m, c) for m in movies for c in m.characters if all(w in fold(c.name) for w in words)]

    def character(self, name: str, movie: str | Movie | None = None) -> tuple[Movie, Character]:
        """The one character `name` names (exact name first), within `movie` when given."""
        film = self.movie(movie) if isinstance(movie, str) else movie
        candidates = self.find_characters("", film)
        exact = [(m, c) for m, c in candidates if fold(c.name) == fold(name)]
        hits = exact or self.find_characters(name, film)
        if len(hits) == 1:
            return hits[0]
        where = f" in {film.label}" if film else ""
        if not hits:
            close = _closest(name, [c.name for _, c in candidates])
            raise CastError(f"no character called {name!r}{where}"
                            + (f"; closest: {', '.join(close)}" if close else ""))
        films = {m.id for m, _ in hits}
        listed = ", ".join(f"{c.name} ({m.label})" for m, c in hits[:6])
        hint = "add --movie TITLE" if len(films) > 1 else "give the full name"
        raise CastError(f"{name!r} matches {len(hits)} characters{where}: {listed}{', ...' if len(hits) > 6 else ''}; {hint}")

    def suggest(self, query: str, n: int = 5) -> list[str]:
        """Film titles and character names closest to `query` (for "nothing matches" messages)."""
        films = _closest(query, [m.title for m in self.movies], n)
        if len(films) >= n:
            return films
        return films + _closest(query, [c.name for m in self.movies for c in m.characters], n - len(films))

    def persona(self, character: str, movie: str | None = None, partner: str | None = None) -> Conditioning:
        """The Conditioning for talking with `character` (of `movie`), the user playing `partner`.

        `partner` may be one of the film's characters (its spelling is then taken from the cast)
        or any name the user likes."""
        film, who = self.character(character, movie)
        if partner:
            match = [c for c in film.characters if fold(c.name) == fold(partner)]
            partner = match[0].name if match else " ".join(partner.split())
        return Conditioning(character=who.name, partner=partner or "", movie=film.title, year=film.year,
                            genres=film.genres)


@lru_cache(maxsize=4)
def load_cast(path: str | Path = CAST_FILE) -> Cast:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CastError(f"no cast file at {path}; build it with `moviechat-train cast --corpus PATH`") from None
    except (OSError, ValueError) as error:
        raise CastError(f"cannot read the cast file {path}: {error}") from None
    return Cast.from_json(data)
