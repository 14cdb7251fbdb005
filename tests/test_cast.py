"""The shipped cast file and persona lookups."""

import json

import pytest

from moviechat_tui.core.cast import CAST_FILE, CastError, load_cast
from moviechat_tui.core.dialogue import Conditioning
from trainer.cast import build_cast, name_case, title_case, write_cast
from trainer.cli import main as train_main

FIXTURE = "tests/fixtures/cornell-mini"


def test_the_shipped_cast_holds_every_named_character_of_the_metadata():
    cast = load_cast(CAST_FILE)
    assert len(cast.movies) == 617
    assert cast.n_characters == 9033  # 9,035 in the metadata, two of them without a name
    assert cast.movies[0].label == "10 Things I Hate About You (1999)"
    assert "Bianca" in [c.name for c in cast.movies[0].characters]


def test_names_and_titles_are_cased_for_people():
    assert title_case("10 things i hate about you") == "10 Things I Hate About You"
    assert title_case("2001: a space odyssey") == "2001: A Space Odyssey"
    assert title_case("rocky ii") == "Rocky II"
    assert name_case("MR. MORGAN") == "Mr. Morgan" and name_case("O'NEIL") == "O'Neil"


@pytest.fixture(scope="module")
def cast(tmp_path_factory):
    path = tmp_path_factory.mktemp("cast") / "cast.json"
    write_cast(build_cast(FIXTURE), path)
    return load_cast(path)


def test_build_reads_all_films_of_the_metadata_even_without_lines(cast):
    titles = {m.id: m for m in cast.movies}
    assert len(titles) == 7 and "m6" in titles  # m6 has no conversations, but it is in the cast


def test_persona_from_a_character_and_film(cast):
    film = cast.movies[0]
    who = film.characters[0]
    persona = cast.persona(who.name.upper(), movie=film.title.lower(), partner="somebody  new")
    assert persona == Conditioning(character=who.name, partner="somebody new", movie=film.title, year=film.year,
                                   genres=film.genres)


def test_unknown_names_list_the_closest_matches(cast):
    film = cast.movies[0]
    typo = film.characters[0].name[:-1] + "x"
    with pytest.raises(CastError, match=f"closest: {film.characters[0].name}"):
        cast.persona(typo, movie=film.title)
    with pytest.raises(CastError, match="no film called"):
        cast.movie("zzzz qqqq")


def test_the_cast_command_writes_a_loadable_file(tmp_path, capsys):
    out = tmp_path / "cast.json"
    assert train_main(["cast", "--corpus", FIXTURE, "--out", str(out)]) == 0
    assert "7 films" in capsys.readouterr().out
    assert json.loads(out.read_text())["version"] == 1
    assert len(load_cast(out).movies) == 7


def test_a_foreign_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(CastError, match="not a moviechat cast file"):
        load_cast(path)
