"""Small text helpers shared by the app's widgets: speakers, genres typed in a form, literal text.

Times, reply details and settings summaries are worded in core/captions.py (the web page and the
CLI use the same words).
"""

from __future__ import annotations

from rich.text import Text

from ..core.dialogue import USER

SPEAKERS = {USER: "YOU", "bot": "BOT"}  # screenplay style


def parse_genres(text: str) -> list[str]:
    return [g.strip().lower() for g in text.split(",") if g.strip()]


def literal(text: str, style: str = "") -> Text:
    """User or model text for display: a Text, so [markup] in it is shown as typed."""
    return Text(text, style=style)
