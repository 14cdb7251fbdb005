"""The line-mode CLI, run as a user runs it: a subprocess with stdin piped."""

import json
import subprocess
import sys

import pytest

from moviechat_tui.core.store import Store


def run(*args, stdin="", env_db=None):
    return subprocess.run(
        [sys.executable, "-m", "moviechat_tui.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def chatted(tmp_path_factory, tiny_gpt2_dir):
    """Two turns of piped chat with the tiny model, as in the README."""
    db = tmp_path_factory.mktemp("cli") / "chat.db"
    result = run("chat", "--model", str(tiny_gpt2_dir), "--db", str(db), "--temperature", "0",
                 "--max-new-tokens", "8", stdin="Hello there.\n\n   \nWhat is your name?\n")
    return db, result


def test_piped_chat_prints_each_reply_and_saves_the_conversation(chatted):
    db, result = chatted
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [l.split(":")[0] for l in lines] == ["You", "Bot", "You", "Bot"]
    assert lines[0] == "You: Hello there." and lines[2] == "You: What is your name?"
    assert all(len(l) > len("Bot: ") for l in lines[1::2])
    [conversation] = Store(db).list_conversations()
    messages = Store(db).messages(conversation.id)
    assert [m.text for m in messages[::2]] == ["Hello there.", "What is your name?"]
    assert [m.text for m in messages[1::2]] == [l[len("Bot: "):].strip() for l in lines[1::2]]


def test_list_replay_export_search(chatted):
    db, _ = chatted
    listed = run("list", "--db", str(db))
    assert "Hello there." in listed.stdout
    replay = run("replay", "1", "--db", str(db))
    assert replay.returncode == 0
    assert replay.stdout.count("You ") == 2 and replay.stdout.count("Bot ") == 2
    assert "What is your name?" in replay.stdout
    exported = json.loads(run("export", "1", "--format", "json", "--db", str(db)).stdout)
    assert len(exported["messages"]) == 4
    md = run("export", "1", "--db", str(db)).stdout
    assert md.startswith("# Hello there.")
    found = run("search", "name", "--db", str(db))
    assert "What is your name?" in found.stdout
    assert "nothing matches" in run("search", "zebra", "--db", str(db)).stderr


def test_continue_a_conversation_with_decoding_options(chatted, tiny_gpt2_dir):
    db, _ = chatted
    result = run("chat", "--model", str(tiny_gpt2_dir), "--db", str(db), "--conversation", "1",
                 "--max-new-tokens", "4", "--seed", "1", stdin="And now?\n")
    assert result.returncode == 0, result.stderr
    messages = Store(db).messages(1)
    assert len(messages) == 6 and messages[4].text == "And now?"
    assert messages[5].settings["max_new_tokens"] <= 4


@pytest.mark.parametrize(
    "args,expected",
    [
        (["replay", "99"], "no conversation"),
        (["export", "99"], "no conversation"),
        (["chat", "--model", "/no/such/dir"], "no model directory"),
        (["chat", "--temperature", "-2"], "temperature"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, expected):
    result = run(*args, "--db", str(tmp_path / "x.db"), stdin="hi\n")
    assert result.returncode == 2
    assert expected in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") <= 1


def test_corrupt_database_is_reported_and_left_alone(tmp_path):
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database" * 100)
    before = db.read_bytes()
    result = run("list", "--db", str(db))
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_models_lists_the_specs():
    result = run("models")
    assert result.returncode == 0
    assert "default" in result.stdout and "smollm2-135m" in result.stdout and "gpt2" in result.stdout


def test_models_says_which_backend_replies_and_what_was_converted(tiny_gpt2_dir, monkeypatch, capsys):
    from moviechat_tui.cli import main
    from moviechat_tui.core.loading import load_model

    load_model(str(tiny_gpt2_dir))  # a GGUF copy in this test's cache
    assert main(["models"]) == 0
    shown = capsys.readouterr().out
    order = [shown.index(f"\n {name} ") for name in ("llama.cpp", "ctranslate2", "transformers")]
    assert order == sorted(order) and "first on CPU" in shown
    assert "llama.cpp-q8_0" in shown and "tiny-gpt2" in shown  # the copy and its guard figure
    monkeypatch.setenv("MOVIECHAT_BACKEND", "transformers")
    assert main(["models"]) == 0
    assert "skipped: the transformers" in capsys.readouterr().out


def test_models_shows_both_guard_figures_and_reads_copies_from_before_the_history_measure(tiny_gpt2_dir,
                                                                                         monkeypatch, capsys):
    from moviechat_tui.cli import main
    from moviechat_tui.core.backends.llamacpp_cache import METADATA
    from moviechat_tui.core.loading import load_model
    from moviechat_tui.core.paths import cache_dir

    load_model(str(tiny_gpt2_dir))
    old = cache_dir() / "llamacpp" / "old-0123456789"  # written by a format-2 cache: no history figure
    old.mkdir()
    (old / METADATA).write_text(json.dumps({"context_window": 2048, "weights": "mix-4bit-most",
                                            "perplexity_change_pct_mix-4bit-most": 1.84,
                                            "failed_mix-4bit-half": "OSError: no library"}))
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
            if line.strip().startswith(("old-", "tiny-gpt2"))}
    assert rows["old-0123456789"] == ["llama.cpp-mix-4bit-most", "+1.84%"]
    copy, everyday, history = rows[next(name for name in rows if name.startswith("tiny-gpt2"))]
    assert copy == "llama.cpp-q8_0" and everyday.endswith("%") and history.endswith("%")


def test_export_then_import_gives_the_same_conversation_and_a_bad_file_writes_nothing(chatted, tmp_path, capsys):
    from moviechat_tui.cli import main

    db, _ = chatted
    exported = tmp_path / "one.json"
    assert main(["export", "1", "--format", "json", "-o", str(exported), "--db", str(db)]) == 0
    other = tmp_path / "other.db"
    result = run("import", str(exported), "--db", str(other))  # as a user runs it
    assert result.returncode == 0, result.stderr
    assert "as conversation #1" in result.stdout
    capsys.readouterr()
    assert main(["export", "1", "--format", "json", "--db", str(other)]) == 0
    original, copy = json.loads(exported.read_text()), json.loads(capsys.readouterr().out)
    assert [m["text"] for m in copy["messages"]] == [m["text"] for m in original["messages"]]
    assert copy["conversation"]["created_at"] == original["conversation"]["created_at"]
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"chats": [{"from": "me", "text": "hi"}]}')
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes("café".encode("latin-1"))
    for path, reason in ((foreign, "not a moviechat conversation export"), (tmp_path / "missing.json", "cannot read"),
                         (latin1, "not UTF-8")):
        assert main(["import", str(path), "--db", str(other)]) == 2
        error = capsys.readouterr().err
        assert error.strip().count("\n") == 0 and path.name in error and reason in error
    assert len(Store(other).list_conversations()) == 1


def test_rated_replies_export_as_preference_data(chatted, tmp_path):
    from trainer.cli import main as train_main

    db, _ = chatted
    store = Store(db)
    first, second = [m for m in store.messages(1) if m.role == "bot"][:2]
    store.rate_message(second.id, rating="up", out_of_character=True)
    store.rate_message(first.id, rating="down")
    out = tmp_path / "prefs" / "ratings.jsonl"
    assert train_main(["ratings", "--out", str(out), "--db", str(db)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["message_id"], r["rating"], r["out_of_character"]) for r in records] == [
        (first.id, "down", False), (second.id, "up", True)]
    assert records[1]["context"] == [{"role": m.role, "text": m.text} for m in store.messages(1)[:3]]
    assert records[1]["reply"] == second.text and records[1]["parent_id"] == store.messages(1)[2].id
    assert records[0]["persona"] == store.get_conversation(1).conditioning
    assert records[0]["model"] and records[0]["settings"]["max_new_tokens"] == 8
    assert train_main(["ratings", "--out", str(out), "--db", str(tmp_path / "none.db")]) == 2
    assert not (tmp_path / "none.db").exists()
