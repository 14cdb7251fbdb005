"""The cast file: every film and character of the corpus's metadata, for the persona pickers.

    moviechat-train cast --corpus ../shared/data/cornell-subset --out moviechat_tui/assets/cast.json

The metadata files of the Cornell release list all 617 films and 9,035 characters (even when a
subset holds the lines of only some films). Names are stored as people read them: the corpus
writes "BIANCA" and "10 things i hate about you"; the file says "Bianca" and
"10 Things I Hate About You". `moviechat_tui.core.cast` reads the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from moviechat_tui.core.cast import CAST_VERSION
from trainer.corpus_files import CorpusError, CorpusFiles, original_records, parse_year, quoted_list

_SMALL_WORDS = {"a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "into", "of", "on", "or",
                "the", "to", "vs", "vs.", "with"}
_ROMAN = re.compile(r"^(?=[ivxlc]+$)c{0,3}(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")


def _cap(word: str) -> str:
    if _ROMAN.match(word):
        return word.upper()  # "rocky ii" -> "Rocky II"
    # "o'neil" -> "O'Neil", "mr." -> "Mr.", "jean-luc" -> "Jean-Luc", "2001:" stays
    return re.sub(r"(^|[-'(\"/.])([a-z])", lambda m: m.group(1) + m.group(2).upper(), word.lower())


def title_case(text: str) -> str:
    """"10 things i hate about you" -> "10 Things I Hate About You" (small words lower inside)."""
    words = text.split()
    small = lambda i: 0 < i < len(words) - 1 and words[i].lower() in _SMALL_WORDS and not words[i - 1].endswith(":")  # noqa: E731
    return " ".join(w.lower() if small(i) else _cap(w) for i, w in enumerate(words))


def name_case(name: str) -> str:
    """"BIANCA" -> "Bianca", "MR. MORGAN" -> "Mr. Morgan", "O'NEIL" -> "O'Neil"."""
    return " ".join(_cap(w) for w in name.split())


def build_cast(corpus_path: str | Path) -> dict:
    """The cast of every film in the metadata files, films in id order, characters by credit then name."""
    from collections import Counter

    skipped: Counter = Counter()
    with CorpusFiles.open_path(Path(corpus_path)) as source:
        if not source.find("movie_titles_metadata.txt") or not source.find("movie_characters_metadata.txt"):
            raise CorpusError(f"{corpus_path} has no movie_titles_metadata.txt / movie_characters_metadata.txt")
        movies = {}
        for movie_id, title, year, _rating, _votes, genres in original_records(source, "movie_titles_metadata.txt", 6, "movie", skipped):
            movies[movie_id] = {"id": movie_id, "title": title_case(title), "year": parse_year(year),
                                "genres": [g.strip().lower() for g in (quoted_list(genres) or []) if g.strip()],
                                "characters": []}
        for char_id, name, movie_id, _title, gender, credit in original_records(source, "movie_characters_metadata.txt", 6, "character", skipped):
            if movie_id in movies and name.strip():
                movies[movie_id]["characters"].append(
                    {"id": char_id, "name": name_case(name), "gender": gender.strip().lower() if gender.strip().lower() in ("f", "m") else "?",
                     "credit": int(credit) if credit.strip().isdigit() else None})
    for movie in movies.values():
        movie["characters"].sort(key=lambda c: (c["credit"] is None, c["credit"] or 0, c["name"]))
    order = sorted(movies, key=lambda m: (len(m), m))  # m0, m1, ..., m10, ...
    return {"version": CAST_VERSION, "source": "Cornell Movie-Dialogs Corpus metadata (movie_titles_metadata.txt,"
            " movie_characters_metadata.txt)", "movies": [movies[m] for m in order]}


def write_cast(cast: dict, out: str | Path) -> Path:
    """One film per line: small diffs, still one JSON document."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in cast.items() if k != "movies"}
    lines = [json.dumps(m, ensure_ascii=False, separators=(",", ":")) for m in cast["movies"]]
    body = json.dumps(head, ensure_ascii=False)[:-1] + ', "movies": [\n' + ",\n".join(lines) + "\n]}\n"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)
    return out
