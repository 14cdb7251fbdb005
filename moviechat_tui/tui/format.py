"""Small text helpers shared by the app's widgets: times, settings, speakers."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from ..core.dialogue import USER
from ..core.settings import GenerationSettings

SPEAKERS = {USER: "YOU", "bot": "BOT"}  # screenplay style


def local_time(iso: str | None, fmt: str = "%H:%M") -> str:
    """A stored ISO-8601 UTC time in the local time zone ("" if missing or unreadable)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime(fmt)
    except ValueError:
        return iso


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


def genres_of(conditioning: dict | None) -> list[str]:
    return list((conditioning or {}).get("genres") or [])


def parse_genres(text: str) -> list[str]:
    return [g.strip().lower() for g in text.split(",") if g.strip()]


def literal(text: str, style: str = "") -> Text:
    """User or model text for display: a Text, so [markup] in it is shown as typed."""
    return Text(text, style=style)
