"""What the user types, before it reaches the store: clean text, and the title it gives a conversation."""

from __future__ import annotations

import re

TITLE_LENGTH = 48
# Far more than a prompt can hold (the model reads the last ~1,000 tokens of an over-long message), and
# small enough that a pasted file can't make every later turn re-tokenize megabytes of history.
MAX_MESSAGE_CHARS = 50_000

# C0/C1 control characters except tab and newline: they would garble terminals and prompts.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class EngineError(Exception):
    """Bad input or state; the message is one line for the user."""


def clean_user_text(text: str) -> str:
    """What is stored and sent for a user message; raises on empty or over-long input."""
    return checked_user_text(text)[0]


def checked_user_text(text: str) -> tuple[str, list[str]]:
    """The cleaned text and one-line notices of what was changed; raises on empty or over-long input."""
    if not isinstance(text, str):
        raise EngineError("a message must be text")
    notices = []
    # Lone surrogates (undecodable bytes read with surrogateescape) can't be stored as UTF-8.
    cleaned = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if cleaned.count("\ufffd") > text.count("\ufffd"):
        notices.append("your message had bytes that are not valid UTF-8; they were replaced with \ufffd")
    text = cleaned.replace("\r\n", "\n").replace("\r", "\n")
    if removed := len(_CONTROL.findall(text)):
        notices.append(f"{removed} control character(s) (such as NUL) were removed from your message")
    text = _CONTROL.sub("", text).strip()
    if not text:
        raise EngineError("empty message: type something to say")
    if len(text) > MAX_MESSAGE_CHARS:
        raise EngineError(f"message too long: {len(text):,} characters (at most {MAX_MESSAGE_CHARS:,});"
                          " nothing was sent")
    return text, notices


def checked_title(title: str) -> str:
    """A conversation's new title, on one line; raises when nothing is left of it."""
    title = " ".join(title.split())
    if not title:
        raise EngineError("a title can't be empty")
    return title


def default_title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
