"""Soak test: every kind of writer on one database for a while, with kill -9 of random writers.

    python bench/soak.py                      # 10 minutes
    python bench/soak.py --minutes 2 --json bench/results/soak.json

Writers (all on one SQLite file, the tiny test model of tests/conftest.py, built here):
  web   one process with 4 web sessions sharing one ChatEngine, as the Streamlit server does
  tui   the Textual app in one process, typed into through Textual's pilot
  pipe  `moviechat-tui chat` with stdin piped, one line per turn

Every few seconds (--kill-every MIN MAX) a random writer gets SIGKILL and is started again (the TUI
and the pipe chat continue their conversation). Each writer journals a turn only once it was shown
as done: a user message once saved, a reply once complete (the pipe chat is journaled from its
stdout). At the end every acknowledged turn must be in the database, intact: turns written = turns
found. Also reported: turns saved but not yet acknowledged when a kill came, replies left 'partial'
by kills, store errors, and SQLite's integrity check. Not part of `make test` (it takes minutes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WRITERS = ROOT / "bench" / "soak_writers.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def build_tiny_model(path: Path) -> None:
    """The tests' tiny random GPT-2 (tests/conftest.py), saved with its tokenizer; converted once here."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _tiny_gpt2

    from moviechat_tui.core.loading import load_model
    from moviechat_tui.core.paths import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    _tiny_gpt2(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    load_model(str(path))  # the fast-path conversion lands in the cache before the writers start


class Writer:
    """One writer process: started, killed, started again; `conversation` is carried over."""

    def __init__(self, name: str, work: Path, db: Path, model: Path) -> None:
        self.name, self.work, self.db, self.model = name, work, db, model
        self.journal = work / f"journal-{name}.jsonl"
        self.process: subprocess.Popen | None = None
        self.conversation: int | None = None
        self.starts = self.kills = 0
        self.counter = itertools.count()  # the pipe's user lines: unique across its restarts

    def start(self) -> None:
        self.starts += 1
        log = open(self.work / f"{self.name}-{self.starts}.log", "w")
        if self.name == "pipe":
            self._start_pipe(log)
            return
        command = [sys.executable, str(WRITERS), self.name, str(self.db), str(self.model), str(self.journal)]
        if self.name == "tui" and self.conversation is None:
            self.conversation = self._journaled_conversation()
        if self.name == "tui" and self.conversation is not None:
            command += ["--conversation", str(self.conversation)]
        self.process = subprocess.Popen(command, env=ENV, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def _journaled_conversation(self) -> int | None:
        entries = read_journal(self.journal)
        return entries[0]["conversation"] if entries else None

    def _start_pipe(self, log) -> None:
        command = [sys.executable, "-m", "moviechat_tui.cli", "chat", "--model", str(self.model), "--db",
                   str(self.db), "--temperature", "0.8", "--max-new-tokens", "12"]
        if self.conversation is not None:
            command += ["--conversation", str(self.conversation)]
        self.process = subprocess.Popen(command, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._drive_pipe, args=(self.process, log), daemon=True).start()

    def _drive_pipe(self, process: subprocess.Popen, log) -> None:
        """Keep one line queued on the chat's stdin. The echo "You: LINE" means LINE is saved; the next
        echo means the reply in between is complete (a reply may span lines). Journal both."""
        from soak_writers import Journal, think, user_line

        banner = process.stderr.readline()  # "conversation #N · model ... · db ..."
        threading.Thread(target=lambda: log.writelines(process.stderr), daemon=True).start()
        if not banner.startswith("conversation #"):
            log.write(banner)
            return
        self.conversation = int(banner.split("#")[1].split()[0])
        journal = Journal(str(self.journal))
        pending, current, reply = [], None, []
        try:
            pending.append(self._send(process, user_line("pipe", self.counter)))
            for line in process.stdout:
                line = line.rstrip("\n")
                if line != f"You: {pending[0]}":
                    reply.append(line)
                    continue
                if current is not None and reply and reply[0].startswith("Bot: "):
                    text = "\n".join(reply)[len("Bot: "):].strip()
                    journal.write(kind="bot", writer="pipe", conversation=self.conversation, user=current, text=text)
                current, reply = pending.pop(0), []
                journal.write(kind="user", writer="pipe", conversation=self.conversation, text=current)
                think()
                pending.append(self._send(process, user_line("pipe", self.counter)))
        except (BrokenPipeError, ValueError, OSError):
            return  # killed under us: what was not echoed was never acknowledged

    @staticmethod
    def _send(process: subprocess.Popen, text: str) -> str:
        process.stdin.write(text + "\n")
        process.stdin.flush()
        return text

    def kill(self, count: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += count


def read_journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # the last line of a writer killed mid-write: never acknowledged
            pass
    return entries


def visible(text: str) -> str:
    """Text as a terminal shows it: Rich drops control characters the database keeps."""
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable()).strip()


def verify(db: Path, journals: list[Path]) -> dict:
    """Every acknowledged turn must be in the database, in its conversation, intact."""
    conn = sqlite3.connect(db)
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    rows = conn.execute("select conversation_id, position, role, text, status from messages"
                        " order by conversation_id, position").fetchall()
    conn.close()
    by_conversation: dict[int, list[tuple]] = {}
    for conversation, position, role, text, status in rows:
        by_conversation.setdefault(conversation, []).append((position, role, text, status))
    gaps = sum(1 for messages in by_conversation.values()
               if [m[0] for m in messages] != list(range(len(messages))))
    index = {(conversation, m[2]): i for conversation, messages in by_conversation.items()
             for i, m in enumerate(messages) if m[1] == "user"}
    report, by_writer = Counter(), Counter()
    acknowledged = set()
    for entry in (e for path in journals for e in read_journal(path)):
        kind = entry["kind"]
        report[f"{kind}_entries"] += 1
        if kind == "store_error":
            continue
        key = (entry["conversation"], entry["text"] if kind == "user" else entry["user"])
        at = index.get(key)
        if kind == "user":
            report["turns_written"] += 1
            by_writer[entry["writer"].rstrip("0123456789")] += 1
            report["turns_found"] += at is not None
            acknowledged.add(key)
        else:
            report["replies_written"] += 1
            messages = by_conversation.get(entry["conversation"], [])
            ok = (at is not None and at + 1 < len(messages) and messages[at + 1][1] == "bot"
                  and messages[at + 1][3] == "complete" and visible(messages[at + 1][2]) == visible(entry["text"]))
            report["replies_found"] += ok
    statuses = Counter(status for _, _, role, _, status in rows if role == "bot")
    return {
        "turns_written": report["turns_written"], "turns_found": report["turns_found"],
        "turns_written_by": dict(by_writer),
        "replies_written": report["replies_written"], "replies_found": report["replies_found"],
        "saved_not_yet_acknowledged": sum(1 for key in index if key not in acknowledged),
        "bot_replies_by_status": dict(statuses), "store_errors": report["store_error_entries"],
        "conversations": len(by_conversation), "messages": len(rows),
        "conversations_with_position_gaps": gaps, "integrity_check": integrity,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(5.0, 20.0), metavar=("MIN", "MAX"),
                        help="seconds between two kills, drawn at random (default 5 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the database, journals and logs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    random.seed(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="moviechat-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MOVIECHAT_CACHE_DIR"] = ENV["MOVIECHAT_CACHE_DIR"] = str(work / "cache")
    db, model = work / "soak.db", work / "tiny-model"
    print(f"building the tiny model in {model}", file=sys.stderr)
    build_tiny_model(model)
    sys.path.insert(0, str(ROOT / "bench"))
    writers = [Writer(name, work, db, model) for name in ("web", "tui", "pipe")]
    for writer in writers:
        writer.start()
    started, end = time.monotonic(), time.monotonic() + args.minutes * 60
    print(f"soaking for {args.minutes:g} min in {work}", file=sys.stderr)
    try:
        while (now := time.monotonic()) < end:
            time.sleep(min(random.uniform(*args.kill_every), max(0.0, end - now)))
            if time.monotonic() >= end:
                break
            fewest = min(w.kills for w in writers)  # at random among the least killed: each gets its turn
            victim = random.choice([w for w in writers if w.kills == fewest])
            victim.kill()
            print(f"{time.monotonic() - started:6.0f} s  kill -9 {victim.name}", file=sys.stderr)
            victim.start()
    finally:
        for writer in writers:  # the end is a kill -9 too (not counted): nothing gets to finish cleanly
            writer.kill(count=False)
    result = {"minutes": args.minutes, "kills": {w.name: w.kills for w in writers}, "work": str(work),
              **verify(db, [w.journal for w in writers])}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = (result["turns_written"] == result["turns_found"] and result["replies_written"] == result["replies_found"]
          and result["integrity_check"] == "ok" and not result["conversations_with_position_gaps"])
    print("PASS: every acknowledged turn is in the database" if ok else "FAIL: see above", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
