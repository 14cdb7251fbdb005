"""The records of the conversation store (conversations, messages) and the checks on what goes in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

MESSAGE_STATUSES = ("complete", "partial", "cancelled", "error")


@dataclass
class Conversation:
    id: int
    title: str
    created_at: str  # ISO-8601 UTC, e.g. "2026-11-25T14:33:36.123Z"; sorts as text
    updated_at: str
    model_spec: str
    settings: dict
    conditioning: dict
    message_count: int = 0


@dataclass
class Message:
    id: int
    conversation_id: int
    position: int  # 0, 1, 2, ... within its conversation
    role: str  # "user" | "bot"
    text: str
    created_at: str
    status: str  # one of MESSAGE_STATUSES
    model: str | None
    token_count: int | None
    latency_ms: float | None
    settings: dict = field(default_factory=dict)  # the generation settings that produced a bot reply


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- helpers ----------------------------------------------------------------------------------


def check_text(text: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"message text must be a string, not {type(text).__name__}")


def check_status(status: str) -> None:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"unknown message status {status!r}; expected one of {MESSAGE_STATUSES}")


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


def conversation_from(row: dict) -> Conversation:
    return Conversation(**{**row, "settings": json.loads(row["settings"]),
                           "conditioning": json.loads(row["conditioning"])})


def message_from(row: dict) -> Message:
    return Message(**{**row, "settings": json.loads(row["settings"])})
