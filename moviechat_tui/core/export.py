"""A conversation as Markdown (every message quoted, so nothing in it becomes markup) or JSON."""

from __future__ import annotations

import json
import re

from .captions import genres_of
from .dialogue import USER
from .store import Conversation, Message


def export_json(conversation: Conversation, messages: list[Message]) -> str:
    from dataclasses import asdict

    return json.dumps(
        {"conversation": asdict(conversation), "messages": [asdict(m) for m in messages]},
        indent=2, ensure_ascii=False,
    )


def export_markdown(conversation: Conversation, messages: list[Message]) -> str:
    genres = ", ".join(genres_of(conversation.conditioning)) or "none"
    lines = [
        f"# {_escape_markdown(conversation.title) if conversation.title else 'Untitled conversation'}",
        "",
        f"- conversation: {conversation.id}",
        f"- created: {conversation.created_at}",
        f"- model: {conversation.model_spec}",
        f"- genres: {genres}",
        "",
    ]
    for m in messages:
        speaker = "You" if m.role == USER else "Bot"
        status = "" if m.status == "complete" else f" _({m.status})_"
        lines.append(f"**{speaker}** · {m.created_at}{status}")
        lines.append("")
        # Quote each line so message text can't turn into headings or HTML blocks.
        lines.extend("> " + _escape_markdown(line) for line in (m.text or "").splitlines() or [""])
        lines.append("")
    return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")  # what could become markup or HTML


def _escape_markdown(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)
