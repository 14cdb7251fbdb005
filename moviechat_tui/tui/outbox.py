"""Messages sent while a reply is still streaming: they wait, in order, and go out once it ends.

Without this, enter mid-reply did nothing and the text stayed in the box, so the next message went
out glued to it. The box is cleared when a message is queued, and a banner says that it waits.
"""

from __future__ import annotations

from rich.text import Text

PREVIEW = 40  # characters of a waiting message shown in the banner


class Outbox:
    def __init__(self) -> None:
        self._texts: list[str] = []

    def __len__(self) -> int:
        return len(self._texts)

    def put(self, text: str) -> None:
        self._texts.append(text)

    def take(self) -> str | None:
        """The oldest waiting message (None when none waits)."""
        return self._texts.pop(0) if self._texts else None

    def take_back(self) -> str:
        """All waiting messages as one text, for the message box; the outbox is empty after."""
        texts, self._texts = self._texts, []
        return "\n".join(texts)

    def banner(self) -> Text:
        first = " ".join(self._texts[0].split())
        first = first if len(first) <= PREVIEW else first[: PREVIEW - 1] + "…"
        text = Text("waiting to send ", style="italic")
        text.append(f"“{first}”", style="bold")
        if len(self._texts) > 1:
            text.append(f" and {len(self._texts) - 1} more", style="italic")
        text.append(" when the reply ends · ↑ in the empty box takes it back · esc stops the reply",
                    style="italic")
        return text
