"""JSON export and import: the whole tree, persona and ratings survive a round trip; a file that is
not a moviechat export is refused with one line and nothing is written."""

from __future__ import annotations

import json

import pytest

from moviechat_tui.core.engine import ChatEngine, EngineError
from moviechat_tui.core.store import Store

PERSONA = {"character": "Rick", "partner": "Ilsa", "movie": "Casablanca", "year": 1942, "genres": ["drama"]}


@pytest.fixture
def engine(tmp_path):
    with Store(tmp_path / "export.db") as store:
        yield ChatEngine(store, "tiny", loader=lambda spec: pytest.fail("no model needed"))


def branchy(store) -> int:
    """A conversation with an edited first message, a regenerated reply (rated) and a rated branch."""
    c = store.create_conversation("Of all the gin joints", model_spec="default", settings={"seed": 7},
                                  conditioning=PERSONA)
    hi = store.add_message(c.id, "user", "Hi.")
    old = store.add_message(c.id, "bot", "Hello, <b>kid</b>.", model="m1", token_count=4, latency_ms=10.5,
                            settings={"temperature": 0.7})
    store.rate_message(old.id, rating="down", out_of_character=True)
    store.add_message(c.id, "user", "Play it.")
    store.add_message(c.id, "bot", "I won't", status="cancelled", model="m1")
    new = store.add_message(c.id, "bot", "Here's looking at you 🎬", parent_id=hi.id, model="m2")
    store.rate_message(new.id, rating="up")
    store.add_message(c.id, "user", "Hey.", parent_id=None)  # the first message, edited
    store.show(hi.id)  # on screen: Hi. -> Here's looking at you
    return c.id


def normalized(text: str) -> dict:
    """The export with ids replaced by their order of appearance and the import time left out."""
    data = json.loads(text)
    data["conversation"].pop("updated_at")
    numbers = {}
    for m in data["messages"] + data["alternatives"]:
        numbers.setdefault(m["id"], len(numbers))
    data["conversation"].pop("id")
    for m in data["messages"] + data["alternatives"]:
        m["id"] = numbers[m["id"]]
        m["parent_id"] = None if m["parent_id"] is None else numbers[m["parent_id"]]
        m.pop("conversation_id")
    return data


def test_export_import_export_gives_the_same_json(engine):
    original = branchy(engine.store)
    exported = engine.export(original, "json")
    data = json.loads(exported)
    assert (data["format"], data["version"]) == ("moviechat-conversation", 2)
    assert [m["text"] for m in data["messages"]] == ["Hi.", "Here's looking at you 🎬"]
    assert len(data["alternatives"]) == 4 and data["conversation"]["conditioning"] == PERSONA
    imported = engine.import_json(exported)
    assert imported.id != original and imported.message_count == 6
    again = engine.export(imported.id, "json")
    assert normalized(again) == normalized(exported)
    assert json.loads(again)["conversation"]["updated_at"] >= json.loads(exported)["conversation"]["updated_at"]
    # what was on screen is on screen, and the other versions are a step away
    shown = engine.messages(imported.id)
    assert [m.text for m in shown] == ["Hi.", "Here's looking at you 🎬"]
    assert (shown[1].rating, shown[1].alternative, shown[1].alternatives) == ("up", 2, 2)
    earlier = engine.show_alternative(imported.id, shown[1].id, -1)
    assert (earlier.rating, earlier.out_of_character) == ("down", True)
    assert [m.text for m in engine.messages(imported.id)] == ["Hi.", "Hello, <b>kid</b>.", "Play it.", "I won't"]
    assert engine.search("looking")[0][0].id in (original, imported.id)


def test_a_version_1_export_imports_as_one_branch(engine):
    legacy = {"conversation": {"id": 3, "title": "old", "created_at": "2026-01-01T00:00:00.000Z",
                               "updated_at": "2026-01-01T00:00:00.000Z", "model_spec": "default",
                               "settings": {}, "conditioning": {"genres": ["comedy"]}, "message_count": 2},
              "messages": [{"id": 7, "conversation_id": 3, "position": 0, "role": "user", "text": "Hi.",
                            "created_at": "2026-01-01T00:00:00.000Z", "status": "complete", "model": None,
                            "token_count": None, "latency_ms": None, "settings": {}},
                           {"id": 8, "conversation_id": 3, "position": 1, "role": "bot", "text": "Yo.",
                            "created_at": "2026-01-01T00:00:01.000Z", "status": "complete", "model": "default",
                            "token_count": 2, "latency_ms": 3.0, "settings": {"temperature": 0.7}}]}
    imported = engine.import_json(json.dumps(legacy))
    assert [(m.text, m.created_at) for m in engine.messages(imported.id)] == [
        ("Hi.", "2026-01-01T00:00:00.000Z"), ("Yo.", "2026-01-01T00:00:01.000Z")]
    assert imported.conditioning == {"genres": ["comedy"]} and imported.created_at == "2026-01-01T00:00:00.000Z"


def _export(engine) -> dict:
    return json.loads(engine.export(branchy(engine.store), "json"))


def _damage(mutate):
    def apply(data):
        mutate(data)
        return json.dumps(data)
    return apply


BAD_FILES = [
    (lambda data: "{not json", "not JSON"),
    (lambda data: json.dumps([1, 2]), "not a moviechat conversation export"),
    (lambda data: json.dumps({"messages": [], "title": "another app's chat"}), "not a moviechat conversation"),
    (_damage(lambda d: d.update(format="other-app")), "its format is 'other-app'"),
    (_damage(lambda d: d.update(version=99)), "newer moviechat"),
    (_damage(lambda d: d["messages"][1].update(role="narrator")), "unknown role"),
    (_damage(lambda d: d["messages"][1].update(text=None)), "'text' must be text"),
    (_damage(lambda d: d["messages"][1].update(rating="meh")), "unknown rating"),
    (_damage(lambda d: d["messages"][1].update(token_count=2**70)), "'token_count' must be"),
    (_damage(lambda d: d["messages"][1].pop("created_at")), "has no 'created_at'"),
    (_damage(lambda d: d["alternatives"][0].update(parent_id=424242)), "which is not in the file"),
    (_damage(lambda d: d["alternatives"][0].update(id=d["messages"][0]["id"])), "two messages have the id"),
    (_damage(lambda d: d["messages"].reverse()), "not one branch"),
    (_damage(lambda d: d["conversation"].update(conditioning="Rick")), "'conditioning' must be an object"),
]


@pytest.mark.parametrize("make,error", BAD_FILES, ids=[error for _, error in BAD_FILES])
def test_a_malformed_or_foreign_file_is_one_clear_line_and_nothing_is_written(engine, make, error):
    text = make(_export(engine))
    before = engine.store.db.execute("select count(*) from messages").fetchone()[0]
    with pytest.raises(EngineError, match=error) as caught:
        engine.import_json(text)
    assert "\n" not in str(caught.value)
    assert len(engine.list_conversations()) == 1
    assert engine.store.db.execute("select count(*) from messages").fetchone()[0] == before


def test_a_cycle_is_refused(engine):
    data = _export(engine)
    a, b = data["alternatives"][-2:]
    a["parent_id"], b["parent_id"] = b["id"], a["id"]
    with pytest.raises(EngineError, match="its own ancestor"):
        engine.import_json(json.dumps(data))


def test_markdown_shows_the_branch_on_screen_with_versions_and_ratings(engine):
    md = engine.export(branchy(engine.store), "md")
    assert "Here's looking at you" in md and "Play it." not in md
    assert "_(version 2 of 2, rated up)_" in md and "_(version 1 of 2)_" in md


def test_an_import_that_fails_half_way_writes_nothing(engine, monkeypatch):
    text = engine.export(branchy(engine.store), "json")
    real, calls = engine.store.add_message, []

    def fails_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.store, "add_message", fails_on_the_third)
    with pytest.raises(OSError):
        engine.import_json(text)
    assert len(engine.list_conversations()) == 1 and engine.search("Hey") and len(engine.search("Hi")) == 1
