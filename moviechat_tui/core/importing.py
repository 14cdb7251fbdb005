"""Writing a conversation from messages, in one transaction: importing a JSON export (core/export.py
describes the format), and forking a conversation at a message.

An import is checked whole before anything is written, and written in one transaction, so a damaged
or foreign file leaves the database as it was. Exporting an imported conversation again gives the
same JSON apart from the ids and "updated_at" (the import time). Version-1 files (no "format", no
"parent_id": one line of messages) are read too.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from .dialogue import ROLES
from .export import FORMAT, VERSION
from .records import MESSAGE_STATUSES, RATINGS, Conversation, Message
from .store import Store


class TranscriptError(ValueError):
    """A file that is not a moviechat export, or a damaged one; the message is one line."""


def import_json(store: Store, text: str) -> Conversation:
    """Write the exported conversation in `text` as a new one; TranscriptError (nothing written) if
    it is not a moviechat export or is damaged."""
    conversation, messages, branch = parse_export(text)
    return _write(store, conversation, messages, branch, ratings=True)


def fork(store: Store, conversation: Conversation, branch: list[Message], title: str) -> Conversation:
    """A new conversation with copies of `branch` (and the persona, settings and model of
    `conversation`). Ratings stay with the originals, so a rated reply is exported for training once."""
    fields = {"title": title, "model_spec": conversation.model_spec, "settings": conversation.settings,
              "conditioning": conversation.conditioning}
    copies = [{**asdict(m), "parent_id": branch[i - 1].id if i else None} for i, m in enumerate(branch)]
    return _write(store, fields, copies, [m.id for m in branch], ratings=False)


def _write(store: Store, conversation: dict, messages: list[dict], branch: list, *, ratings: bool) -> Conversation:
    """One transaction: the conversation, its messages (parents before children), the branch on screen."""

    def write() -> int:
        created = store.create_conversation(
            conversation.get("title") or "", model_spec=conversation.get("model_spec") or "",
            settings=conversation.get("settings"), conditioning=conversation.get("conditioning"),
            created_at=conversation.get("created_at"))
        new_ids = {}
        for m in messages:
            new_ids[m["id"]] = store.add_message(
                created.id, m["role"], m["text"], parent_id=new_ids.get(m["parent_id"]), status=m["status"],
                model=m["model"], token_count=m["token_count"], latency_ms=m["latency_ms"],
                settings=m["settings"], created_at=m["created_at"]).id
            if ratings and (m["rating"] or m["out_of_character"]):
                store.rate_message(new_ids[m["id"]], rating=m["rating"], out_of_character=m["out_of_character"],
                                   rated_at=m["rated_at"])
        for old_id in branch:
            store.show(new_ids[old_id])
        if branch:
            store.end_branch_at(new_ids[branch[-1]])
        return created.id

    return store.get_conversation(store.transaction(write))


def parse_export(text: str) -> tuple[dict, list[dict], list[int]]:
    """(conversation fields, messages in an order that puts parents first, ids of the branch on screen)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptError(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not (isinstance(data, dict) and isinstance(data.get("conversation"), dict)
            and isinstance(data.get("messages"), list)):
        raise TranscriptError("not a moviechat conversation export (no 'conversation' and 'messages')")
    if data.get("format", FORMAT) != FORMAT:
        raise TranscriptError(f"not a moviechat conversation export (its format is {data['format']!r})")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise TranscriptError(f"written by a newer moviechat (format version {version!r}; this one reads up to"
                              f" {VERSION})")
    conversation = _check_fields(data["conversation"], "conversation", {
        "title": (str,), "created_at": (str,), "model_spec": (str,), "settings": (dict,), "conditioning": (dict,)})
    alternatives = data.get("alternatives", [])
    if not isinstance(alternatives, list):
        raise TranscriptError("'alternatives' must be a list of messages")
    legacy = not any(isinstance(m, dict) and "parent_id" in m for m in data["messages"] + alternatives)
    messages, branch = [], []
    for index, raw in enumerate(data["messages"] + alternatives):
        where = f"message {index + 1}"
        if not isinstance(raw, dict):
            raise TranscriptError(f"{where} is not an object")
        m = _check_fields(raw, where, _MESSAGE_TYPES, required=("id", "role", "text", "created_at"))
        if m["role"] not in ROLES or m.setdefault("status", "complete") not in MESSAGE_STATUSES:
            raise TranscriptError(f"{where}: unknown role or status {m['role']!r}, {m['status']!r}")
        if m.setdefault("rating", None) not in (*RATINGS, None):
            raise TranscriptError(f"{where}: unknown rating {m['rating']!r}")
        for name, default in (("model", None), ("token_count", None), ("latency_ms", None), ("settings", {}),
                              ("out_of_character", False), ("rated_at", None), ("parent_id", None)):
            m.setdefault(name, default)
        if legacy:  # version 1: one line of messages
            m["parent_id"] = messages[-1]["id"] if messages else None
        if index < len(data["messages"]):
            branch.append(m["id"])
        messages.append(m)
    return conversation, _parents_first(messages, branch), branch


_OPTIONAL_NONE = (type(None),)
_MESSAGE_TYPES = {
    "id": (int,), "parent_id": (int, *_OPTIONAL_NONE), "role": (str,), "text": (str,), "created_at": (str,),
    "status": (str,), "model": (str, *_OPTIONAL_NONE), "token_count": (int, *_OPTIONAL_NONE),
    "latency_ms": (int, float, *_OPTIONAL_NONE), "settings": (dict,), "rating": (str, *_OPTIONAL_NONE),
    "out_of_character": (bool,), "rated_at": (str, *_OPTIONAL_NONE),
}


def _check_fields(raw: dict, where: str, types: dict, required: tuple = ()) -> dict:
    checked = {}
    for name, allowed in types.items():
        if name not in raw:
            if name in required:
                raise TranscriptError(f"{where} has no {name!r}")
            continue
        value = raw[name]
        if (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
                or (isinstance(value, int) and abs(value) >= 2**63)):  # SQLite's integers are 64-bit
            raise TranscriptError(f"{where}: {name!r} must be {' or '.join(_type_name(t) for t in allowed)},"
                                  f" not {json.dumps(value)[:40]}")
        checked[name] = value
    return checked


def _type_name(t: type) -> str:
    return {int: "a whole number", float: "a number", str: "text", dict: "an object", bool: "true or false",
            type(None): "null"}[t]


def _parents_first(messages: list[dict], branch: list[int]) -> list[dict]:
    """The messages sorted by (depth, id): parents first, and a re-export lists them in the same order.
    Checks that ids are unique, parents exist, there are no cycles and the branch is a line."""
    by_id = {}
    for m in messages:
        if m["id"] in by_id:
            raise TranscriptError(f"two messages have the id {m['id']}")
        by_id[m["id"]] = m
    depth = {}
    for m in messages:
        chain, seen, current = [], set(), m
        while current["id"] not in depth:
            if current["id"] in seen:
                raise TranscriptError(f"message {current['id']} is its own ancestor")
            seen.add(current["id"])
            chain.append(current)
            parent_id = current["parent_id"]
            if parent_id is None:
                depth[chain.pop()["id"]] = 0
                break
            if parent_id not in by_id:
                raise TranscriptError(f"message {current['id']} follows message {parent_id}, which is not in the file")
            current = by_id[parent_id]
        for done in reversed(chain):
            depth[done["id"]] = depth[done["parent_id"]] + 1
    for i, message_id in enumerate(branch):
        if by_id[message_id]["parent_id"] != (branch[i - 1] if i else None):
            raise TranscriptError(f"'messages' is not one branch: message {message_id} does not follow the one"
                                  " before it")
    return sorted(messages, key=lambda m: (depth[m["id"]], m["id"]))
