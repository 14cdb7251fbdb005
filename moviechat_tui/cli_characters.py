"""`moviechat-tui characters` and the persona options of `moviechat-tui chat`.

    moviechat-tui characters                      every film of the shipped cast
    moviechat-tui characters casablanca           films matching the words, with their characters,
                                                  and characters of that name in any film
    moviechat-tui characters --movie "10 things"  one film's characters
    moviechat-tui chat --character Bianca --movie "10 things" --as Cameron
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape

from .core.cast import Cast, CastError, Character, Movie, load_cast
from .core.dialogue import Conditioning


def add_parser(sub, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("characters", parents=parents, help="films and characters the bot can play")
    parser.add_argument("query", nargs="*", help="words of a film title or of a character's name")
    parser.add_argument("--movie", help="only this film's characters")
    parser.add_argument("--json", action="store_true", help="print JSON: a list of films with their characters")


def add_persona_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("who you talk to (see `moviechat-tui characters`)")
    group.add_argument("--character", help="the character the bot plays, from the shipped cast")
    group.add_argument("--movie", help="the film (needed when the name is in several films)")
    group.add_argument("--as", dest="partner", metavar="NAME", help="who you are: one of the film's characters or any name")


def persona_from_args(args) -> Conditioning | None:
    """The persona the options ask for (None when none is given); CastError names the closest matches."""
    character, movie, partner = (getattr(args, n, None) for n in ("character", "movie", "partner"))
    if character:
        return load_cast().persona(character, movie=movie, partner=partner)
    if movie:  # a film without a character: the bot plays someone in it
        film = load_cast().movie(movie)
        return Conditioning(partner=partner or "", movie=film.title, year=film.year, genres=film.genres)
    return Conditioning(partner=partner) if partner else None


def find(cast: Cast, query: str, movie: str | None) -> list[tuple[Movie, list[Character]]]:
    """Films with the characters to show: a film's whole cast when its title matches, else the
    characters whose names match."""
    if movie:
        film = cast.movie(movie)
        return [(film, [c for _, c in cast.find_characters(query, film)])]
    if not query.strip():
        return [(m, list(m.characters)) for m in cast.movies]
    films = cast.find_movies(query)
    shown = {m.id for m in films}
    result = [(m, list(m.characters)) for m in films]
    by_film: dict[str, tuple[Movie, list[Character]]] = {}
    for m, c in cast.find_characters(query):
        if m.id not in shown:
            by_film.setdefault(m.id, (m, []))[1].append(c)
    return result + list(by_film.values())


def as_json(found: list[tuple[Movie, list[Character]]]) -> str:
    return json.dumps([{"title": m.title, "year": m.year, "genres": list(m.genres),
                        "characters": [{"name": c.name, "gender": c.gender, "credit": c.credit} for c in chars]}
                       for m, chars in found], indent=2, ensure_ascii=False)


def cmd_characters(args, out: Console, err: Console) -> int:
    cast = load_cast()
    query = " ".join(args.query)
    found = find(cast, query, args.movie)
    if args.json:
        sys.stdout.write(as_json(found) + "\n")
        return 0
    if not found:
        close = cast.suggest(query)
        err.print(escape(f"nothing in the cast matches {query!r}" + (
            f"; closest: {', '.join(close)}" if close else "; `moviechat-tui characters` lists every film")),
            soft_wrap=True)
        return 0
    if not query.strip() and not args.movie:
        for m, chars in found:  # one line a film, so that grep and head work
            out.print(f"{escape(m.label)}  [dim]{escape(', '.join(m.genres))} · {len(chars)} characters[/]",
                      soft_wrap=True)
        err.print(f"[dim]{len(found)} films, {cast.n_characters} characters: `moviechat-tui characters WORDS` "
                  "shows a film's characters[/]", soft_wrap=True)
        return 0
    for m, chars in found:
        out.print(f"[bold]{escape(m.label)}[/]  [dim]{escape(', '.join(m.genres))}[/]")
        out.print("  " + escape(", ".join(c.name for c in chars)) if chars else "  [dim](no named characters)[/]",
                  soft_wrap=True)
    first = found[0]
    if first[1]:
        err.print(f"[dim]talk to one: moviechat-tui chat --character {escape(_quoted(first[1][0].name))} "
                  f"--movie {escape(_quoted(first[0].title))}[/]", soft_wrap=True)
    return 0


def _quoted(text: str) -> str:
    return f'"{text}"' if not text.replace("-", "").isalnum() else text
