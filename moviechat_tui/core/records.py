"""The records of the conversation store (conversations, messages) and the checks on what goes in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

MESSAGE_STATUSES = ("complete", "partial", "cancelled", "error")
RATINGS = ("up", "down")


@dataclass
class Conversation:
    id: int
    title: str
    created_at: str  # ISO-8601 UTC, e.g. "2026-11-25T14:33:36.123Z"; sorts as text
    updated_at: str
    model_spec: str
    settings: dict
    conditioning: dict
    message_count: int = 0  # every message, alternatives included


@dataclass
class Message:
    id: int
    conversation_id: int
    position: int  # 0, 1, 2, ...: how many messages come before it on its branch
    role: str  # "user" | "bot"
    text: str
    created_at: str
    status: str  # one of MESSAGE_STATUSES
    model: str | None
    token_count: int | None
    latency_ms: float | None
    settings: dict = field(default_factory=dict)  # the generation settings that produced a bot reply
    parent_id: int | None = None  # the message before it on its branch; None for a first message
    rating: str | None = None  # "up" | "down" | None (bot replies)
    out_of_character: bool = False  # the user said the reply broke character
    rated_at: str | None = None
    alternative: int = 1  # its number among the versions of this turn (its siblings), from 1
    alternatives: int = 1  # how many versions of this turn there are


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- helpers ----------------------------------------------------------------------------------


def check_text(text: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"message text must be a string, not {type(text).__name__}")


def check_status(status: str) -> None:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"unknown message status {status!r}; expected one of {MESSAGE_STATUSES}")


def check_rating(rating: str | None) -> None:
    if rating is not None and rating not in RATINGS:
        raise ValueError(f"unknown rating {rating!r}; expected one of {RATINGS} or None")


def clean_title(title: str) -> str:
    if not isinstance(title, str):
        raise ValueError(f"title must be a string, not {type(title).__name__}")
    return " ".join(title.split())  # one line for the conversation list; "" lets the engine pick one


def to_json(value: dict | None, what: str) -> str:
    try:
        return json.dumps(value or {}, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serializable: {error}") from None


def fts_query(text: str) -> str:
    """User text as an FTS5 query that matches all its words: each word becomes a quoted string,
    so quotes, *, -, :, NEAR, AND/OR and friends are searched for, never interpreted."""
    words = text.replace("\x00", " ").split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


# Every message read numbers it among its siblings (same parent; first messages: same conversation).
# Siblings share a position, so the (conversation_id, position) index finds them.
MESSAGE_COLUMNS = """m.*,
    (select count(*) from messages s where s.conversation_id = m.conversation_id and s.position = m.position
        and s.parent_id is m.parent_id and s.id <= m.id) as alternative,
    (select count(*) from messages s where s.conversation_id = m.conversation_id and s.position = m.position
        and s.parent_id is m.parent_id) as alternatives"""


def conversation_from(row: dict) -> Conversation:
    row = {**row}
    row.pop("shown_root_id", None)  # the branch on screen: read through the store's branch queries
    return Conversation(**{**row, "settings": json.loads(row["settings"]),
                           "conditioning": json.loads(row["conditioning"])})


def message_from(row: dict) -> Message:
    row = {**row}
    row.pop("shown_child_id", None)
    return Message(**{**row, "settings": json.loads(row["settings"]),
                      "out_of_character": bool(row.get("out_of_character"))})
