"""A conversation as Markdown (the branch on screen, every message quoted, so nothing in it becomes
markup) or JSON (the whole tree).

The JSON export (`FORMAT`, version 2):

    {"format": "moviechat-conversation", "version": 2,
     "conversation": {"id", "title", "created_at", "updated_at", "model_spec", "settings",
                      "conditioning" (the persona: character, partner, movie, year, genres), "message_count"},
     "messages": [the branch on screen, first message first],
     "alternatives": [every other message (earlier replies, edited messages), by position, then age]}

Each message carries "id", "parent_id" (None for a first message) and "position", its text and
status, the model and settings that wrote a reply, and its rating ("up"/"down"/None,
"out_of_character", "rated_at"). core/importing.py reads it back. Version 1 (before conversations
were trees) had no "format" and no "alternatives"; its "messages" were the whole conversation.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

from .captions import genres_of
from .dialogue import USER, Conditioning
from .store import Conversation, Message

FORMAT = "moviechat-conversation"
VERSION = 2
_MESSAGE_FIELDS = ("id", "conversation_id", "parent_id", "position", "role", "text", "created_at", "status",
                   "model", "token_count", "latency_ms", "settings", "rating", "out_of_character", "rated_at")


def export_json(conversation: Conversation, branch: list[Message], tree: list[Message]) -> str:
    """`branch`: the messages on screen; `tree`: every message of the conversation."""
    shown = {m.id for m in branch}
    return json.dumps({
        "format": FORMAT, "version": VERSION,
        "conversation": asdict(conversation),
        "messages": [_message_dict(m) for m in branch],
        "alternatives": [_message_dict(m) for m in sorted(tree, key=lambda m: (m.position, m.id))
                         if m.id not in shown],
    }, indent=2, ensure_ascii=False)


def _message_dict(message: Message) -> dict:
    data = asdict(message)
    return {name: data[name] for name in _MESSAGE_FIELDS}


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
    persona = Conditioning.from_dict(conversation.conditioning)
    if persona.has_persona:  # who the bot played, to whom, in which film (the genres have their line)
        lines.insert(-1, f"- persona: {_escape_markdown(replace(persona, genres=()).describe())}")
    for m in messages:
        speaker = "You" if m.role == USER else "Bot"
        notes = [] if m.status == "complete" else [m.status]
        if m.alternatives > 1:
            notes.append(f"version {m.alternative} of {m.alternatives}")
        if m.rating:
            notes.append(f"rated {m.rating}")
        if m.out_of_character:
            notes.append("out of character")
        lines.append(f"**{speaker}** · {m.created_at}" + (f" _({', '.join(notes)})_" if notes else ""))
        lines.append("")
        # Quote each line so message text can't turn into headings or HTML blocks.
        lines.extend("> " + _escape_markdown(line) for line in (m.text or "").splitlines() or [""])
        lines.append("")
    return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")  # what could become markup or HTML


def _escape_markdown(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)
