"""The reply being streamed, a mixin of the Chat widget (chat.py).

A reply generates on a thread worker that iterates the engine's Reply and posts each piece to the
widget (post_message is thread-safe and never blocks the worker), so the UI stays live and esc can
cancel. `Replying` relies on the Chat's `engine`, `conversation`, `chat_log`, `chat_input`,
`outbox`, reshow(), reload_conversation(), sync_turns() and _send_waiting().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from textual import work
from textual.message import Message as TextualMessage
from textual.timer import Timer
from textual.widgets import Button
from textual.worker import get_current_worker

from ..core.engine import LOADING, READY, EngineError, Reply
from ..core.loading import ModelLoadError
from ..core.store import StoreError
from .widgets import MessageView

LOAD_POLL = 0.05  # seconds between checks of a model load a reply waits for (and of esc)
# Seconds a reply runs before the footer offers esc: recomposing its keys while the model reads the
# history delayed the first token by ~60 ms (bench/streaming.py), and most replies end sooner.
FOOTER_DELAY = 0.5


@dataclass
class ReplyPiece(TextualMessage):
    view: MessageView
    text: str


@dataclass
class ReplyStarted(TextualMessage):
    """The user's message is saved (and named a new conversation)."""

    conversation_id: int


@dataclass
class ReplyDone(TextualMessage):
    reply: Reply | None
    view: MessageView
    error: str | None


class Replying:
    reply: Reply | None = None  # the one being streamed
    generating = False
    stop_requested = False
    footer_waits = False  # a reply began under FOOTER_DELAY ago: the footer keeps its keys
    _footer_timer: Timer | None = None
    _sent_text: str | None = None  # what the user sent, back into the box should saving it fail
    last_speed: float | None = None  # tokens/s: decoding alone after a live reply, overall for a stored one
    last_first_token_ms: float | None = None  # after a live reply only (the store keeps no such figure)

    def stop(self) -> None:
        if self.generating:
            self.stop_requested = True
            if self.reply is not None:
                self.reply.cancel()

    async def _start_reply(self, start: Callable[[], Reply], shown: list[MessageView], text: str | None = None) -> None:
        """Show `shown`, run `start` (which saves the user's message) and stream its reply into the
        last of them.

        `text` is what the user sent: should saving it fail, it goes back into the message box."""
        self._sent_text = text
        self.generating, self.stop_requested, self.footer_waits = True, False, True
        self._footer_timer = self.set_timer(FOOTER_DELAY, self._footer_follows)
        # The stop button and the status line change with the new message, in one layout: each
        # layout while the model reads the history takes a core from its two threads.
        self.query_one("#stop", Button).display = True
        self.post_message(self.Changed())
        try:
            await self.chat_log.add(*shown)
        except Exception:  # nothing was sent: as it was
            self._reply_ended()
            raise
        self._reply_worker(start, shown[-1])

    def _reply_ended(self) -> None:
        self.generating, self.reply, self.footer_waits = False, None, False
        if self._footer_timer is not None:
            self._footer_timer.stop()
        self.query_one("#stop", Button).display = False

    @work(thread=True, group="reply", exit_on_error=False)
    def _reply_worker(self, start: Callable[[], Reply], view: MessageView) -> None:
        worker = get_current_worker()
        reply, error = None, None
        try:
            reply = self.reply = start()  # commits the user message
            self.post_message(ReplyStarted(reply.conversation_id))
            # Iterating would block on the model load, which can't be interrupted: wait here instead,
            # so that esc or quitting still answer (the message stays saved, unanswered).
            while not self.engine.wait_for_model(LOAD_POLL) and not (worker.is_cancelled or self.stop_requested):
                pass
            if self.engine.model_status == LOADING:
                reply.status = "cancelled"
                self.post_message(ReplyDone(reply, view, None))
                return
            if self.stop_requested:
                reply.cancel()
            for piece in reply:
                if worker.is_cancelled:  # the app is closing
                    reply.cancel()
                    continue
                self.post_message(ReplyPiece(view, piece))
        except (EngineError, StoreError, ModelLoadError) as exc:
            error = str(exc)
        except Exception as exc:  # reply.status is "error"; the app carries on
            error = (reply and reply.error) or f"generation failed: {exc}"
        self.post_message(ReplyDone(reply, view, error))

    def on_reply_started(self, message: ReplyStarted) -> None:
        new = self.conversation is None
        if new:  # the new conversation is saved now: its title goes up
            try:
                self.conversation = self.engine.get_conversation(message.conversation_id)
            except StoreError as exc:
                self.notify(str(exc), severity="error", timeout=8, markup=False)
        if self.engine.model_status != READY:  # it waits for the model: the footer offers esc now
            self.footer_waits = False
        elif not new:
            return  # the status line and the sidebar catch up later (FOOTER_DELAY, or the reply's end)
        self.post_message(self.Changed())

    def _footer_follows(self) -> None:
        if self.footer_waits:
            self.footer_waits = False
            self.post_message(self.Changed())

    def on_reply_piece(self, message: ReplyPiece) -> None:
        message.view.append(message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        reply, view, error = message.reply, message.view, message.error
        self._reply_ended()
        if reply is None:  # nothing was saved (say, the database was locked): show what is stored
            self.notify(error or "the message was not sent", severity="error", timeout=8, markup=False)
            # What was sent, what waited after it, and what is being typed: all in the box, nothing lost.
            parts = (self._sent_text, self.outbox.take_back(), self.chat_input.text)
            self.chat_input.text = "\n".join(t for t in parts if t)
            self.reshow()
            self.post_message(self.Changed())
            return
        status = "error" if error and reply.status == "partial" else reply.status
        view.finish(reply.message, status, note=(error or "") if status == "error" else "")
        if reply.stats.new_tokens:
            stats = reply.stats
            self.last_speed = stats.decode_tokens_per_second
            self.last_first_token_ms = None if stats.first_token_seconds is None else stats.first_token_seconds * 1000
        for notice in reply.notices:
            self.notify(notice, timeout=6, markup=False)
        if error:
            self.notify(error, severity="error", timeout=8, markup=False)
        self.reload_conversation()
        self.sync_turns()
        self.post_message(self.Changed())
        if self.outbox:
            self.call_later(self._send_waiting)
