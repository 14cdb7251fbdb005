"""How times, replies and settings are described to people: one wording for the app, the web page
and the CLI (each adds its own styling).

Times are stored as ISO-8601 UTC. A terminal shows them in the local time zone; the web page shows
them in UTC, labelled, since its server's zone need not be its reader's.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .dialogue import BOT
from .settings import GenerationSettings
from .store import Message

DATE_TIME = "%Y-%m-%d %H:%M"
SECONDS = "%Y-%m-%d %H:%M:%S"
CLOCK = "%H:%M"


def display_time(iso: str | None, fmt: str = DATE_TIME, *, utc: bool = False) -> str:
    """A stored time in the local time zone, or in UTC labelled so ("" if missing; as stored if unreadable)."""
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if utc:
        return moment.astimezone(timezone.utc).strftime(fmt) + " UTC"
    return moment.astimezone().strftime(fmt)


def reply_facts(message: Message, conversation_settings: dict | None = None) -> list[str]:
    """What produced a bot reply: model, length, time taken; the settings when they differ from
    `conversation_settings` (when given); and why it stops mid-sentence when it was cut short."""
    if message.role != BOT:
        return []
    parts = [message.model or "model unknown"]
    if message.token_count:
        parts.append(f"{message.token_count} tokens")
    if message.latency_ms:
        parts.append(f"{message.latency_ms / 1000:.1f} s")
    if conversation_settings is not None and message.settings and _differs(message.settings, conversation_settings):
        parts.append(settings_summary(message.settings))
    if cut_short(message):
        parts.append("cut at max new tokens")  # why it ends mid-sentence, and what to raise
    return parts


def cut_short(message: Message) -> bool:
    """A complete reply that used its whole token budget."""
    budget = (message.settings or {}).get("max_new_tokens", 0)
    return message.role == BOT and message.status == "complete" and bool(message.token_count) and budget > 0 \
        and message.token_count >= budget


def _differs(used: dict, configured: dict) -> bool:
    # The engine trims max_new_tokens to fit the model's window: that alone is not a different setting.
    keys = set(GenerationSettings().to_dict()) - {"max_new_tokens"}
    return any(used.get(k) != configured.get(k) for k in keys if k in configured)


def settings_summary(settings: GenerationSettings | dict, genres: list[str] | tuple[str, ...] = ()) -> str:
    """One short line: "T 0.7 · p 0.9 · k 50 · rep 1.15 · max 64 · comedy"."""
    if isinstance(settings, dict):
        settings = GenerationSettings.from_dict(settings)
    s = settings
    parts = ["greedy" if s.temperature == 0 else f"T {s.temperature:g}"]
    if s.temperature > 0:
        parts += [f"p {s.top_p:g}", f"k {s.top_k}"]
    parts += [f"rep {s.repetition_penalty:g}", f"max {s.max_new_tokens}"]
    if s.seed is not None:
        parts.append(f"seed {s.seed}")
    if genres:
        parts.append(", ".join(genres))
    return " · ".join(parts)


def settings_line(settings: GenerationSettings | dict) -> str:
    """Every setting spelled out, for a reply's details."""
    from .settings import DESCRIPTIONS

    if isinstance(settings, dict):
        settings = GenerationSettings.from_dict(settings)
    parts = []
    for setting in DESCRIPTIONS:
        value = getattr(settings, setting.name)
        shown = setting.blank if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{setting.label.lower()} {shown}")
    return " · ".join(parts)


def genres_of(conditioning: dict | None) -> list[str]:
    return list((conditioning or {}).get("genres") or [])
