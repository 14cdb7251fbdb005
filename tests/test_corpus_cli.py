"""`moviechat-train corpus`: the numbers, as JSON and as tables; errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def _json(capsys, *args: str) -> dict:
    assert main(["corpus", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_totals_and_skips(capsys):
    stats = _json(capsys, "--corpus", str(FIXTURES / "cornell-mini"))
    assert {k: stats[k] for k in ("movies", "characters", "conversations", "utterances", "exchanges")} == {
        "movies": 6, "characters": 12, "conversations": 8, "utterances": 24, "exchanges": 16,
    }
    assert stats["skipped"] == {"character_without_lines": 1, "movie_without_conversations": 1}
    assert sum(row["movies"] for row in stats["splits"].values()) == 6
    assert sum(row["exchanges"] for row in stats["splits"].values()) == 16
    assert stats["turn_length_unit"] == "tokens"
    assert sum(stats["turn_lengths"].values()) == 24
    assert stats["top_genres"]["drama"] == 2 and stats["top_genres"]["thriller"] == 2


def test_json_examples_report(capsys):
    stats = _json(capsys, "--corpus", str(FIXTURES / "convokit-mini"), "--examples", "--max-length", "64")
    examples = stats["examples"]
    assert sum(row["examples"] for row in examples.values()) == 16
    for split, row in examples.items():
        assert row["examples"] == stats["splits"][split]["exchanges"]
        assert 0 < row["reply_tokens"] < row["tokens"]
        assert 0 <= row["padding_bucketed"] <= row["padding_random"] < 1


def test_tables(capsys):
    assert main(["corpus", "--corpus", str(FIXTURES / "cornell-mini")]) == 0
    out = capsys.readouterr().out
    for expected in ("conversations", "exchanges", "validation", "movie without conversations", "Top genres", "Turn length"):
        assert expected in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "/nonexistent/corpus"], "does not exist"),
        (["--corpus", str(FIXTURES / "cornell-mini"), "--tokenizer", "/nonexistent/tokenizer"], "cannot load tokenizer"),
    ],
)
def test_errors_are_one_line(capsys, args, message):
    assert main(["corpus", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
