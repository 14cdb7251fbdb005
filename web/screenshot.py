"""Regenerate docs/web-screenshot.png: real conversations on the page, in headless Chromium.

    python -m web.screenshot [--model smollm2-135m] [--out docs/web-screenshot.png]

Starts `moviechat-tui web` on a free port with a throwaway database, chats through the page like a
user would, and saves a screenshot. Needs /usr/bin/chromium (.ci/install-browser) and playwright.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CONVERSATIONS = [  # oldest first; the last one stays open
    ([], ["Are you talking to me?"]),
    (["comedy"], ["What's the worst date you've ever been on?"]),
    (["drama", "romance"], ["Where were you last night?", "That's so long ago, I don't remember.",
                            "Will I see you tonight?"]),
]
MAX_NEW_TOKENS = 64  # the default; set anyway, as a user would


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moviechat_tui.cli", "web", "--model", model, "--db", str(db), "--port", str(port)],
        env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise SystemExit("error: the web server did not start")


def stop(server: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the launcher's process group; SIGKILL what is left after `grace` seconds."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait()  # the launcher (reaped, so only the streamlit server can keep the group alive)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)


def chat(page, genres: list[str], lines: list[str]) -> None:
    from playwright.sync_api import expect

    sidebar = page.get_by_test_id("stSidebar")
    shown = page.get_by_test_id("stChatMessage").get_by_test_id("stText")
    sidebar.get_by_role("button", name="New conversation").click()
    expect(shown).to_have_count(0)
    sidebar.get_by_text("Decoding settings").click()
    field = sidebar.get_by_role("spinbutton", name="Max new tokens", exact=True)
    field.fill(str(MAX_NEW_TOKENS))
    field.press("Enter")
    expect(field).to_have_value(str(MAX_NEW_TOKENS))
    sidebar.get_by_text("Decoding settings").click()  # closed again for the picture
    for genre in genres:
        sidebar.get_by_test_id("stMultiSelect").click()
        page.keyboard.type(genre)
        page.get_by_role("option", name=genre, exact=True).click()
        page.keyboard.press("Escape")
        expect(sidebar.get_by_test_id("stMultiSelect")).to_contain_text(genre)
    for line in lines:
        before = shown.count()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill(line)
        box.press("Enter")
        expect(shown).to_have_count(before + 2, timeout=600_000)  # reply done, page rerun from the DB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("docs/web-screenshot.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(args.model, Path(tmp) / "chat.db", port)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_test_id("stChatInputTextArea").wait_for(timeout=300_000)  # first load converts
                for genres, lines in CONVERSATIONS:
                    chat(page, genres, lines)
                page.mouse.move(0, 0)  # no hover effects in the picture
                page.wait_for_timeout(500)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            stop(server)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
