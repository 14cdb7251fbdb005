"""Bad input through `moviechat-tui` as a user gives it: each case gets one clear line and nothing
saved is lost. A 1 MB message, NUL bytes and invalid UTF-8 on stdin; a corrupt database file; a
read-only database directory (and file)."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from moviechat_tui.core.store import Store


def run(*args, stdin=b"", unprivileged=False, env=None):
    command = [sys.executable, "-m", "moviechat_tui.cli", *map(str, args)]
    if unprivileged and os.geteuid() == 0:  # root ignores file permissions unless it drops these
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory read-only for us")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=240, env={**os.environ, **(env or {})})


def lines(output: bytes) -> list[str]:
    return output.decode("utf-8", "replace").strip().splitlines()


def test_bad_lines_on_stdin_each_get_one_line_and_the_chat_goes_on(tmp_path, tiny_gpt2_dir):
    db = tmp_path / "chat.db"
    stdin = b"".join([b"first\n", b"x" * 1_000_000 + b"\n", b"nul\x00in\x00side\n",
                      b"caf\xe9 \xff\xfe end\n", b"last\n"])
    # strict: stdin as Python sets it up in a UTF-8 desktop locale (en_US.UTF-8), where a stray byte
    # would be a UnicodeDecodeError
    result = run("chat", "--model", tiny_gpt2_dir, "--db", db, "--max-new-tokens", "4", stdin=stdin,
                 env={"PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0, result.stderr
    errors = lines(result.stderr)
    assert "Traceback" not in result.stderr.decode()
    assert [e for e in errors if "too long" in e] == [
        "message too long: 1,000,000 characters (at most 50,000); nothing was sent"]
    assert sum("control character" in e for e in errors) == 1
    assert sum("not valid UTF-8" in e for e in errors) == 1
    assert not any("x" * 100 in line for line in lines(result.stdout))  # the refused line is not echoed
    with Store(db) as store:
        [conversation] = store.list_conversations()
        messages = store.messages(conversation.id)
    assert [m.text for m in messages if m.role == "user"] == ["first", "nulinside", "caf\ufffd \ufffd\ufffd end", "last"]
    assert [m.status for m in messages] == ["complete"] * 8


def _saved_conversation(db):
    with Store(db) as store:
        conversation = store.create_conversation("keep me")
        store.add_message(conversation.id, "user", "Are you still there?")
        store.add_message(conversation.id, "bot", "Always.")
    return conversation.id


def _one_error_line(result, *expected):
    assert result.returncode == 2
    output = lines(result.stderr)
    if output and output[0].startswith("conversation #"):  # chat's banner, once the store is open
        output = output[1:]
    assert len(output) == 1 and output[0].startswith("error: "), output
    assert all(text in output[0] for text in expected), output[0]


@pytest.mark.parametrize("damage", ["not sqlite", "damaged pages"])
def test_a_corrupt_database_is_one_line_and_left_untouched(tmp_path, tiny_gpt2_dir, damage):
    db = tmp_path / "chat.db"
    if damage == "not sqlite":
        db.write_bytes(os.urandom(20_000))
    else:
        _saved_conversation(db)
        data = db.read_bytes()
        db.write_bytes(data[:100] + bytes(b ^ 0x5A for b in data[100:]))  # the header only survives
    before = db.read_bytes()
    _one_error_line(run("list", "--db", db), str(db), "not a SQLite database" if damage == "not sqlite"
                    else "damaged")
    _one_error_line(run("chat", "--model", tiny_gpt2_dir, "--db", db, stdin=b"hello\n"), str(db))
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.db"]


def test_a_read_only_directory_is_one_line_and_loses_nothing(tmp_path, tiny_gpt2_dir):
    folder = tmp_path / "readonly"
    folder.mkdir()
    db = folder / "chat.db"
    conversation_id = _saved_conversation(db)
    before = db.read_bytes()
    folder.chmod(0o555)
    try:
        for args in (["chat", "--model", tiny_gpt2_dir, "--conversation", conversation_id], ["list"]):
            result = run(*args, "--db", db, stdin=b"Hello?\n", unprivileged=True)
            _one_error_line(result, f"cannot write {db}", "read-only", "nothing was changed")
        _one_error_line(run("list", "--db", folder / "new.db", unprivileged=True), "read-only")
    finally:
        folder.chmod(0o755)
    assert db.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["chat.db"]
    with Store(db) as store:
        assert [m.text for m in store.messages(conversation_id)] == ["Are you still there?", "Always."]


def test_a_read_only_file_still_reads_and_refuses_writes_in_one_line(tmp_path, tiny_gpt2_dir):
    db = tmp_path / "chat.db"
    conversation_id = _saved_conversation(db)
    db.chmod(0o444)
    listed = run("list", "--db", db, unprivileged=True)
    assert listed.returncode == 0 and "keep me" in listed.stdout.decode()
    result = run("chat", "--model", tiny_gpt2_dir, "--db", db, "--conversation", conversation_id,
                 stdin=b"Hello?\n", unprivileged=True)
    _one_error_line(result, f"cannot write {db}", "the file is read-only", "nothing was changed")
    db.chmod(0o644)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from messages").fetchone()[0] == 2
    conn.close()


def test_a_failed_reply_in_piped_chat_is_one_line_and_the_chat_goes_on(tmp_path, tiny_gpt2_dir, monkeypatch,
                                                                       capsys):
    import io

    from moviechat_tui import cli
    from moviechat_tui.core import engine as engine_module
    from moviechat_tui.core.generation import GenerationStalled

    real, calls = engine_module.stream_reply, []

    def stalls_once(*args):
        stream = real(*args)
        calls.append(args)
        if len(calls) == 1:  # the first reply stalls after one piece, as the watchdog reports it
            def pieces():
                stream.text = "Hel"
                yield "Hel"
                raise GenerationStalled("the model produced no token for 60 s; reply stopped, try again")

            stream._pieces = pieces()
        return stream

    monkeypatch.setattr(engine_module, "stream_reply", stalls_once)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"first\nsecond\n")))
    db = tmp_path / "chat.db"
    assert cli.main(["chat", "--model", str(tiny_gpt2_dir), "--db", str(db), "--max-new-tokens", "4"]) == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == ["error: generation failed: the model produced no token for 60 s; reply stopped, try again"]
    with Store(db) as store:
        [conversation] = store.list_conversations()
        assert [(m.role, m.status) for m in store.messages(conversation.id)] == [
            ("user", "complete"), ("bot", "error"), ("user", "complete"), ("bot", "complete")]
        assert store.messages(conversation.id)[1].text == "Hel"
