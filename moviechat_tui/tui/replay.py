"""Replay: a saved conversation played back turn by turn, or stepped through with a key."""

from __future__ import annotations

import time
from dataclasses import replace

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..core.captions import SECONDS, display_time, genres_of, reply_facts, settings_summary
from ..core.dialogue import BOT, Conditioning
from ..core.store import Conversation, Message
from .format import literal
from .widgets import ChatLog, MessageView

TICK = 1 / 20  # seconds between animation frames
READING_SPEED = 40  # characters per second of a bot reply at ×1
PAUSE = 1.0  # seconds between turns at ×1
SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0)


def turn_detail(message: Message, conversation_settings: dict) -> str:
    """What produced a turn (see captions.reply_facts), with its settings where they differ from the conversation's."""
    return " · ".join(reply_facts(message, conversation_settings or {}))


class ReplayScreen(Screen[int]):
    """Plays `messages` back; dismisses with the conversation id."""

    BINDINGS = [
        Binding("space", "toggle_play", "Play/Pause"),
        Binding("n,right", "step", "Next turn"),
        Binding("plus,equals_sign", "speed(1)", "Faster"),
        Binding("minus", "speed(-1)", "Slower"),
        Binding("home,r", "restart", "Restart"),
        Binding("escape,q", "close", "Back to chat"),
    ]

    def __init__(self, conversation: Conversation, messages: list[Message], autoplay: bool = True) -> None:
        super().__init__(id="replay")
        self.conversation, self.messages = conversation, messages
        self.turn = 0  # index of the turn being revealed (== len(messages) when finished)
        self.chars = 0.0  # characters of that turn revealed so far
        self.wait = 0.0  # seconds left before the next turn starts
        self.playing = autoplay
        self.speed_index = SPEEDS.index(1.0)
        self.current: MessageView | None = None
        self._last_tick = time.monotonic()

    def compose(self):
        yield Static(id="replay-header")
        yield ChatLog(id="replay-log")
        yield Footer()

    def on_mount(self) -> None:
        self._update_header()
        self.set_interval(TICK, self._tick)

    @property
    def finished(self) -> bool:
        return self.turn >= len(self.messages)

    @property
    def shown_views(self) -> list[MessageView]:
        return self.query_one("#replay-log", ChatLog).views()

    # --- playing ------------------------------------------------------------------------------

    def _tick(self) -> None:
        # Real elapsed time, not the nominal tick: a busy CPU delays ticks but not the reading speed.
        now = time.monotonic()
        elapsed, self._last_tick = min(now - self._last_tick, 0.5), now
        if not self.playing:
            return
        if self.finished:
            self.playing = False
            self._update_header()
            return
        speed = SPEEDS[self.speed_index]
        if self.wait > 0:
            self.wait -= elapsed * speed
            return
        message = self.messages[self.turn]
        if self.current is None:
            self._start_turn(message)
        if message.role == BOT:
            self.chars += READING_SPEED * speed * elapsed
        else:
            self.chars = len(message.text)  # the user's lines appear at once, as typed
        if self.chars >= len(message.text):
            self._end_turn()
            self.wait = PAUSE
        else:
            self.current.set_text(message.text[: int(self.chars)])

    def _start_turn(self, message: Message) -> None:
        bot_name = Conditioning.from_dict(self.conversation.conditioning).character if message.role == BOT else ""
        self.current = MessageView(message.role, "", created_at=message.created_at, status="partial",
                                   time_format=SECONDS, speaker=bot_name, message=message,
                                   detail=turn_detail(message, self.conversation.settings))
        self.chars = 0.0
        log = self.query_one("#replay-log", ChatLog)
        log.mount(self.current)
        log.scroll_end(animate=False)
        log.anchor()
        self._update_header()

    def _end_turn(self) -> None:
        message = self.messages[self.turn]
        self.current.finish(message, message.status)
        self.current = None
        self.turn += 1
        self.chars = 0.0
        self._update_header()

    # --- keys -----------------------------------------------------------------------------------

    def action_toggle_play(self) -> None:
        if self.finished:
            self.action_restart()
            return
        self.playing = not self.playing
        self._update_header()

    def action_step(self) -> None:
        """Show the rest of this turn, or else the whole next turn; stepping pauses the playback."""
        self.playing = False
        if not self.finished:
            if self.current is None:
                self._start_turn(self.messages[self.turn])
            self._end_turn()
            self.wait = 0.0
        self._update_header()

    def action_speed(self, change: int) -> None:
        self.speed_index = max(0, min(len(SPEEDS) - 1, self.speed_index + change))
        self._update_header()

    def action_restart(self) -> None:
        self.query_one("#replay-log", ChatLog).remove_children()
        self.turn, self.chars, self.wait, self.current, self.playing = 0, 0.0, 0.0, None, True
        self._update_header()

    def action_close(self) -> None:
        self.dismiss(self.conversation.id)

    def _update_header(self) -> None:
        c = self.conversation
        if self.finished:
            state = "■ finished · space replays"
        elif self.playing:
            state = f"▶ playing ×{SPEEDS[self.speed_index]:g}"
        else:
            state = f"⏸ paused ×{SPEEDS[self.speed_index]:g} · space plays · n steps"
        header = Text("REPLAY ", style="bold reverse")
        header.append(" ")
        header.append_text(literal(f"#{c.id} {c.title or '(untitled)'}", "bold"))
        header.append(f"  turn {min(self.turn + (self.current is not None), len(self.messages))}/{len(self.messages)}"
                      f"  {state}\n")
        persona = Conditioning.from_dict(c.conditioning)
        if persona.has_persona:  # who the bot played (the genres are with the settings below)
            header.append_text(literal(replace(persona, genres=()).describe() + "\n", "italic"))
        header.append_text(literal(f"started {display_time(c.created_at)} · model {c.model_spec}"
                                   f" · {settings_summary(c.settings, genres_of(c.conditioning))}", "dim"))
        if not self.messages:
            header.append("\n(this conversation has no messages yet)", style="italic")
        self.query_one("#replay-header", Static).update(header)
