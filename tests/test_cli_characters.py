"""`moviechat-tui characters` and `chat --character/--movie/--as`."""

import io
import json
import subprocess
import sys

import pytest

from moviechat_tui.cli import main
from moviechat_tui.core.dialogue import Conditioning
from moviechat_tui.core.store import Store


def characters(capsys, *args):
    code = main(["characters", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_no_query_lists_every_film_one_line_each(capsys):
    code, out, err = characters(capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 617
    assert "Casablanca (1942)  drama, romance, war · 15 characters" in lines
    assert "617 films" in err


def test_a_query_matching_a_film_lists_its_characters(capsys):
    code, out, err = characters(capsys, "casablanca")
    assert code == 0
    assert out.splitlines()[0].startswith("Casablanca (1942)")
    assert "Rick, Ilsa, Laszlo" in out
    assert "chat --character Rick --movie Casablanca" in err


def test_a_query_matching_names_lists_them_by_film_as_json(capsys):
    code, out, _ = characters(capsys, "bianca", "--json")
    films = json.loads(out)
    assert code == 0 and len(films) == 4
    assert {f["title"] for f in films} >= {"10 Things I Hate About You", "Scream 3"}
    assert all([c["name"] for c in f["characters"]] == ["Bianca"] for f in films)


def test_movie_option_and_its_errors(capsys):
    code, out, _ = characters(capsys, "--movie", "10 things", "--json")
    [film] = json.loads(out)
    assert code == 0 and film["year"] == 1999 and film["characters"][0] == {"name": "Patrick", "gender": "m", "credit": 1}
    code, out, err = characters(capsys, "--movie", "star")
    assert code == 2 and out == ""
    assert err.startswith("error: 'star' matches 17 films: Dark Star (1974)") and err.count("\n") == 1


def test_nothing_matching_suggests_the_closest(capsys):
    code, out, err = characters(capsys, "casablnca")
    assert code == 0 and out == ""
    assert "nothing in the cast matches 'casablnca'; closest: Casablanca" in err


@pytest.mark.parametrize("args,expected", [
    (["--character", "bianca"], "'bianca' matches 4 characters: Bianca (10 Things I Hate About You (1999)), "),
    (["--character", "bianka", "--movie", "10 things"], "no character called 'bianka' in 10 Things I Hate About"
                                                          " You (1999); closest: Bianca"),
    (["--movie", "casablnca"], "no film called 'casablnca' in the cast; closest: Casablanca (1942)"),
])
def test_an_unknown_persona_is_one_line_and_creates_nothing(tmp_path, capsys, args, expected):
    db = tmp_path / "x.db"
    assert main(["chat", "--db", str(db), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not db.exists()


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "moviechat_tui.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=240)


def test_chat_with_a_character_stores_and_shows_the_persona(tmp_path, tiny_gpt2_dir, capsys, monkeypatch):
    db = str(tmp_path / "p.db")
    result = run("chat", "--model", str(tiny_gpt2_dir), "--db", db, "--character", "rick", "--movie", "casablanca",
                 "--as", "ilsa", "--max-new-tokens", "6", "--seed", "2", stdin="Play it again.\n")
    assert result.returncode == 0, result.stderr
    assert "conversation #1 · Rick (to Ilsa) · Casablanca (1942) · drama, romance, war" in result.stderr
    assert result.stdout.splitlines()[1].startswith("Rick: ")
    stored = Store(db).get_conversation(1)
    assert Conditioning.from_dict(stored.conditioning) == Conditioning(
        "Rick", "Ilsa", "Casablanca", 1942, ("drama", "romance", "war"))
    assert stored.settings["max_new_tokens"] == 6

    def printed(*args) -> str:
        assert main([*args, "--db", db]) == 0
        return capsys.readouterr().out

    replay = printed("replay", "1", "--print").splitlines()
    assert "Rick (to Ilsa) · Casablanca (1942)" in replay[0] and replay[3].startswith("Rick ")
    assert "- persona: Rick (to Ilsa) · Casablanca (1942)\n" in printed("export", "1")
    assert json.loads(printed("export", "1", "--format", "json"))["conversation"]["conditioning"][
        "character"] == "Rick"

    # Another character for the same conversation, from the next reply; its settings stay.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    printed("chat", "--model", str(tiny_gpt2_dir), "--conversation", "1", "--character", "ilsa", "--movie",
            "casablanca")
    stored = Store(db).get_conversation(1)
    assert stored.conditioning["character"] == "Ilsa" and "partner" not in stored.conditioning
    assert stored.settings["max_new_tokens"] == 6


def test_a_model_that_cannot_load_leaves_no_empty_conversation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Hello?\n")))  # piped, as a user would
    db = tmp_path / "x.db"
    assert main(["chat", "--db", str(db), "--model", str(tmp_path / "nothing"), "--character", "rick",
                 "--movie", "casablanca"]) == 2
    assert "error:" in capsys.readouterr().err
    assert Store(db).list_conversations() == []
