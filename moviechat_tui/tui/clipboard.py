"""Copy a reply or a conversation out of the terminal.

Textual's `App.copy_to_clipboard` sends OSC 52, which most terminals put on the clipboard, but some
ignore it without a word (macOS Terminal; tmux unless `set -g set-clipboard on`), and the app can't
tell. So the text also goes to a file in the user data dir, and the notification says both.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App

from ..core.captions import display_time
from ..core.dialogue import USER, Conditioning
from ..core.paths import data_dir
from ..core.store import Conversation, Message

CLIP_FILE = "clipboard.txt"


def clip_path() -> Path:
    return data_dir() / CLIP_FILE


def plain_transcript(conversation: Conversation, messages: list[Message]) -> str:
    """The conversation as plain text to paste anywhere: a heading, then "SPEAKER  time" and the text."""
    persona = Conditioning.from_dict(conversation.conditioning)
    bot = (persona.character or "bot").upper()
    lines = [conversation.title or "Untitled conversation"]
    if persona.has_persona:
        lines.append(persona.describe())
    for m in messages:
        status = "" if m.status == "complete" else f" ({m.status})"
        lines += ["", f"{'YOU' if m.role == USER else bot}  {display_time(m.created_at)}{status}",
                  m.text]
    return "\n".join(lines) + "\n"


def copy_text(app: App, text: str, what: str) -> Path | None:
    """Send `text` to the clipboard and write it to `clip_path()`; notify what was done. Returns the
    file written (None when it could not be)."""
    app.copy_to_clipboard(text)
    path = clip_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        app.notify(f"Sent {what} to the clipboard ({len(text)} characters). Not saved to {path}: "
                   f"{exc.strerror or exc}", title="Copied", severity="warning", markup=False)
        return None
    app.notify(f"Sent {what} to the clipboard ({len(text)} characters).\nIf your terminal ignores that "
               f"(OSC 52), it is also in {path}", title="Copied", timeout=8, markup=False)
    return path
