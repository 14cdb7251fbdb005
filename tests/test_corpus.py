"""Loading the corpus: both layouts, dir and zip, ordering, and every kind of malformed input."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from trainer.clean import CleanConfig
from trainer.corpus import corpus_hash, load_corpus
from trainer.corpus_files import CorpusError

FIXTURES = Path(__file__).parent / "fixtures"
CORNELL_MINI = FIXTURES / "cornell-mini"
CONVOKIT_MINI = FIXTURES / "convokit-mini"
SEP = b" +++$+++ "


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _line(*fields: bytes, end: bytes = b"\n") -> bytes:
    return SEP.join(fields) + end


@pytest.fixture
def malformed_dir(tmp_path) -> Path:
    """The original layout with every defect the loader must survive (see the comments)."""
    d = tmp_path / "malformed"
    d.mkdir()
    (d / "movie_titles_metadata.txt").write_bytes(
        _line(b"m0", b"first", b"1999", b"6.9", b"100", b"['comedy', 'Romance']", end=b"\r\n")  # CRLF
        + b"\r\n"  # blank line
        + _line(b"m1", b"second", b"2000", b"7.0", end=b"\r\n")  # too few fields
        + _line(b"m2", b"third", b"2001", b"5.0", b"9", b"not a list")  # genres unparsable
    )
    (d / "movie_characters_metadata.txt").write_bytes(
        _line(b"u0", b"ANN", b"m0", b"first", b"f", b"1")
        + _line(b"u1", b"BOB", b"m0")  # truncated: BOB's metadata is lost
    )
    (d / "movie_lines.txt").write_bytes(
        _line(b"L9", b"u1", b"m1", b"BOB", b"Last line of m1", end=b"\r\n")
        + _line(b"L8", b"u0", b"m1", b"ANN", b"", end=b"\r\n")  # empty utterance
        + _line(b"L7", b"u1", b"m1", b"BOB", b"Caf\xe9 au lait\x92s fine, I\xef\xbf\xbd", end=b"\r\n")
        + b"\n"  # blank line
        + b"L6 +++$+++ u0 +++$+++ m1\n"  # truncated line
        + _line(b"L5", b"u0", b"m0", b"ANN", b"Five", b"extra")  # too many fields
        + _line(b"L4", b"u1", b"m0", b"BOB", b"\xff\x00Four\x81")  # control and undefined bytes
        + _line(b"L3", b"u0", b"m0", b"ANN", b"<i>Three</i>--three!")
        + _line(b"L2", b"u1", b"m0", b"BOB", b"Two")
        + _line(b"L2", b"u1", b"m0", b"BOB", b"Duplicate two")  # duplicate id: the first wins
        + _line(b"L1", b"u0", b"m0", b"ANN", b"One")
        + _line(b"L0", b"u0", b"m0", b"ANN", b"Never used")  # in no conversation
    )
    (d / "movie_conversations.txt").write_bytes(
        _line(b"u0", b"u1", b"m0", b"['L1', 'L2', 'L3', 'L4']", end=b"\r\n")
        + _line(b"u0", b"u1", b"m0", b"['L1', 'L404', 'L2', 'L3']")  # a missing id cuts it: [L1] and [L2, L3]
        + _line(b"u0", b"u1", b"m1", b"['L7', 'L8', 'L9']")  # m1 has no metadata
        + _line(b"u0", b"u1", b"m1", b"['L500', 'L501']")  # nothing left
        + _line(b"u0", b"u1", b"m0", b"['L1', 'L2'")  # truncated list
        + b"u0 +++$+++ u1 +++$+++ m0\n"  # too few fields
        + b"\n"
        + _line(b"u0", b"u1", b"m1", b"['L9']")  # one turn is no conversation
    )
    return d


def test_original_layout_counts_and_metadata():
    corpus = load_corpus(CORNELL_MINI)
    stats = corpus.stats()
    assert (stats["movies"], stats["characters"], stats["conversations"]) == (6, 12, 8)
    assert (stats["utterances"], stats["exchanges"]) == (24, 16)
    assert stats["skipped"] == {"movie_without_conversations": 1, "character_without_lines": 1}
    assert corpus.movies["m0"].genres == ("comedy", "romance")
    assert corpus.movies["m1"].year == 1985  # "1985/I" in the file
    assert corpus.movies["m4"].title == "café society"  # ISO-8859-1 byte 0xE9
    assert corpus.characters["u1"].gender == "m" and corpus.characters["u5"].gender == "?"


def test_turns_follow_the_id_list_not_the_file_order():
    # movie_lines.txt lists L4, L3, L2, L1 (descending, as the real release does).
    corpus = load_corpus(CORNELL_MINI)
    first = corpus.conversations[0]
    assert [u.id for u in first.utterances] == ["L1", "L2", "L3", "L4"]
    assert first.texts == ["Where are you going?", "Out.", "Out where?", "Just out -- okay?"]
    assert [u.speaker_id for u in first.utterances] == ["u0", "u1", "u0", "u1"]


def test_convokit_layout_matches_the_original():
    original, convokit = load_corpus(CORNELL_MINI), load_corpus(CONVOKIT_MINI)
    assert convokit.layout == "convokit"
    by_id = {c.id: c for c in original.conversations}
    assert [c.id for c in convokit.conversations] == list(by_id)
    for conv in convokit.conversations:
        assert [u.id for u in conv.utterances] == [u.id for u in by_id[conv.id].utterances]
        assert conv.texts == by_id[conv.id].texts
        assert conv.movie_id == by_id[conv.id].movie_id
    assert convokit.movies == original.movies
    assert convokit.characters == original.characters
    # L33 replies to a missing L99: that conversation was ordered by numeric id.
    assert convokit.repaired == {"reply_chain_broken": 1}


def test_zip_is_read_in_place_at_any_depth(tmp_path):
    archive = tmp_path / "cornell_movie_dialogs_corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(CORNELL_MINI.iterdir()):
            zf.write(f, f"cornell movie-dialogs corpus/{f.name}")
            zf.writestr(f"__MACOSX/cornell movie-dialogs corpus/._{f.name}", b"\x00\x05\x16\x07 mac resource fork")
    from_zip, from_dir = load_corpus(archive), load_corpus(CORNELL_MINI)
    assert corpus_hash(from_zip) == corpus_hash(from_dir)
    assert from_zip.stats()["conversations"] == 8


def test_corpus_hash_follows_content_and_cleaning(tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in CORNELL_MINI.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert corpus_hash(load_corpus(copy)) == corpus_hash(load_corpus(CORNELL_MINI))
    assert corpus_hash(load_corpus(copy, CleanConfig(lowercase=True))) != corpus_hash(load_corpus(CORNELL_MINI))
    lines = copy / "movie_lines.txt"
    lines.write_bytes(lines.read_bytes().replace(b"Out where?", b"Out where, then?"))
    assert corpus_hash(load_corpus(copy)) != corpus_hash(load_corpus(CORNELL_MINI))


def test_malformed_original_is_skipped_and_counted(malformed_dir):
    corpus = load_corpus(malformed_dir)
    assert dict(corpus.skipped) == {
        "blank_line": 3,
        "malformed_movie_line": 2,
        "malformed_character_line": 1,
        "malformed_utterance_line": 2,
        "duplicate_utterance_id": 1,
        "malformed_conversation_line": 2,
        "missing_utterance": 3,
        "short_conversation": 2,
        "utterance_not_in_conversation": 1,
    }
    assert dict(corpus.repaired) == {"movie_metadata_missing": 1, "character_metadata_missing": 1}
    assert [[u.id for u in c.utterances] for c in corpus.conversations] == [
        ["L1", "L2", "L3", "L4"],
        ["L2", "L3"],  # the part after the missing L404
        ["L7", "L8", "L9"],
    ]
    texts = {u.id: u.text for c in corpus.conversations for u in c.utterances}
    assert texts["L2"] == "Two"
    assert texts["L3"] == "Three -- three!"
    assert texts["L7"] == "Café au lait’s fine, I --"  # Windows-1252 quote; lost character at a cut-off
    assert "Four" in texts["L4"] and not any(ord(ch) < 32 or 0x80 <= ord(ch) < 0xA0 for ch in texts["L4"])
    assert texts["L8"] == ""  # empty utterances stay in place
    assert corpus.characters["u1"].name == "BOB"  # from movie_lines.txt
    assert corpus.movies["m0"].genres == ("comedy", "romance")
    assert corpus.movies["m1"].genres == ()


def test_malformed_convokit_is_skipped_and_counted(tmp_path):
    d = tmp_path / "convokit"
    d.mkdir()
    good = lambda uid, text, reply: json.dumps(  # noqa: E731
        {"id": uid, "conversation_id": "L1", "text": text, "speaker": "u0", "reply_to": reply, "meta": {"movie_id": "m0"}}
    ).encode()
    (d / "utterances.jsonl").write_bytes(
        good("L2", "Second", "L1") + b"\r\n"
        + b"\n"  # blank
        + b'{"id": "L3", "conversation_id": "L1", "text": "cut off\n'  # invalid JSON
        + b'{"text": "no ids"}\n'  # missing keys
        + good("L1", "First \xffbyte", None).replace(b"\\u00ff", b"\xff") + b"\n"  # raw invalid UTF-8
        + good("L2", "Again", "L1") + b"\n"  # duplicate id
        + json.dumps({"id": "L9", "conversation_id": "L9", "text": "Alone", "speaker": "u1", "reply_to": None}).encode() + b"\n"
    )
    (d / "conversations.json").write_text(json.dumps({"L1": {"meta": {"movie_idx": "m0", "movie_name": "x", "genre": "['drama']"}}}))
    corpus = load_corpus(d)
    assert dict(corpus.skipped) == {"blank_line": 1, "malformed_utterance_line": 2, "duplicate_utterance_id": 1, "short_conversation": 1}
    assert dict(corpus.repaired) == {"undecodable_bytes": 1, "character_metadata_missing": 1}
    assert [c.texts for c in corpus.conversations] == [["First byte", "Second"]]
    assert corpus.movies["m0"].genres == ("drama",)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: p, "no corpus files"),
        (lambda p: _write(p / "not.zip", b"PK\x03\x04 broken"), "readable zip"),
    ],
)
def test_unreadable_corpus_raises_one_line_error(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message) as info:
        load_corpus(make(tmp_path))
    assert "\n" not in str(info.value)


def test_conversations_in_a_split_share_no_movie():
    corpus = load_corpus(CORNELL_MINI)
    movies = {split: {c.movie_id for c in corpus.conversations_in(split)} for split in ("train", "validation", "test")}
    assert all(movies.values())  # 6 movies: none of the three splits is empty
    assert not (movies["train"] & movies["validation"] or movies["train"] & movies["test"] or movies["validation"] & movies["test"])
    assert set().union(*movies.values()) == set(corpus.movies)
