"""The chat widget: one conversation's messages, the message box, and the reply being streamed
(replying.py).

The widget posts `Chat.Changed` when what the screen shows about it (title, speed, whether a reply
is running) may have changed.
"""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import on
from textual.containers import Horizontal, Vertical
from textual.message import Message as TextualMessage
from textual.widgets import Button, Static

from ..core.captions import genres_of
from ..core.dialogue import BOT, USER, Conditioning
from ..core.engine import FAILED, ChatEngine, EngineError, clean_user_text
from ..core.settings import GenerationSettings
from ..core.store import Conversation, Message, StoreError, utc_now
from .busy import write_in_background
from .format import literal
from .outbox import Outbox
from .replying import Replying
from .turn_actions import TurnActions
from .widgets import ChatInput, ChatLog, TurnView


class Chat(Replying, TurnActions, Vertical):
    """The open conversation (None: a new one, saved when its first message is sent). The reply being
    streamed is Replying's; the keys of a selected message (versions, edit, regenerate, fork,
    rating) are TurnActions'."""

    class Changed(TextualMessage):
        """The conversation, its reply state or its settings changed: status and sidebar should follow."""

    def __init__(self, engine: ChatEngine, **kwargs) -> None:
        super().__init__(**kwargs)
        self.engine = engine
        self.conversation: Conversation | None = None
        self.settings: GenerationSettings = engine.settings
        self.genres: list[str] = []
        self.persona = Conditioning()  # who the bot plays (its genres are self.genres)
        self.outbox = Outbox()  # messages sent while a reply streams

    def compose(self):
        yield ChatLog(id="chat-log")
        yield Static(id="edit-banner")
        with Horizontal(id="composer"):
            yield ChatInput(id="chat-input", placeholder="Say something to the movie… (enter sends)")
            yield Button("■ Stop", id="stop", variant="error", tooltip="stop the reply (esc)")

    @property
    def chat_input(self) -> ChatInput:
        return self.query_one("#chat-input", ChatInput)

    @property
    def chat_log(self) -> ChatLog:
        return self.query_one("#chat-log", ChatLog)

    # --- what is shown ----------------------------------------------------------------------------

    def show(self, conversation: Conversation | None, messages: list[Message]) -> None:
        self.conversation = conversation
        if conversation is not None:
            self.settings = self.engine.settings_for(conversation)
            self.genres = genres_of(conversation.conditioning)
            self.persona = Conditioning.from_dict(conversation.conditioning)
        self.end_edit()
        failed = self.engine.model_status == FAILED
        self.chat_log.show(messages, None if failed else self._hint(), self.persona.character)
        if failed:
            self.chat_log.mount(Static(self._failure_text(), classes="load-error"))
        bot = [m for m in messages if m.role == BOT and m.token_count and m.latency_ms]
        self.last_speed = bot[-1].token_count / (bot[-1].latency_ms / 1000) if bot else None
        self.last_first_token_ms = None

    def show_load_failure(self) -> None:
        self.chat_log.query(".hint").remove()  # "the bot answers…": not now
        self.chat_log.mount(Static(self._failure_text(), classes="load-error"))

    def reshow(self) -> None:
        """The open conversation as stored, after something went wrong on the way."""
        if self.conversation is None:
            self.show(None, [])
            return
        try:
            conversation, messages = self.engine.transcript(self.conversation.id)
        except StoreError:
            return
        self.show(conversation, messages)

    def reload_conversation(self) -> None:
        if self.conversation is not None:
            try:
                self.conversation = self.engine.get_conversation(self.conversation.id)  # title, count
            except StoreError:
                pass

    def apply_settings(self, settings: GenerationSettings, genres: list[str]) -> None:
        """Use them now; store them with the conversation on a worker (the database may be busy)."""
        self.settings, self.genres = settings, genres
        self.post_message(self.Changed())
        if self.conversation is None:
            return

        def saved(conversation: Conversation) -> None:
            if self.conversation is not None and self.conversation.id == conversation.id:
                self.conversation = conversation
                self.genres = genres_of(conversation.conditioning)
                self.post_message(self.Changed())

        write_in_background(self.app, partial(self.engine.update_settings, self.conversation.id, settings, genres),
                            saved)

    def apply_persona(self, persona: Conditioning) -> None:
        """Who the bot plays, from the next reply on: shown now, stored with the conversation on a worker."""
        self._show_persona(persona)
        if self.conversation is None:
            return

        def saved(conversation: Conversation) -> None:
            if self.conversation is not None and self.conversation.id == conversation.id:
                self.conversation = conversation
                self._show_persona(Conditioning.from_dict(conversation.conditioning))

        write_in_background(self.app, partial(self.engine.update_settings, self.conversation.id, persona=persona),
                            saved)

    def _show_persona(self, persona: Conditioning) -> None:
        self.persona, self.genres = persona, list(persona.genres)
        for view in self.chat_log.views():  # the conversation's character speaks its replies
            if view.role == BOT:
                view.relabel(persona.character)
        self.post_message(self.Changed())

    def _hint(self) -> Text:
        text = Text("A new conversation. ", style="bold")
        text.append("Type below and press enter; the bot answers like a movie character "
                    "(f2 picks which one, from 617 films).\n"
                    "ctrl+b saved conversations · ctrl+s settings · f1 keys · ctrl+p every command")
        return text

    def _failure_text(self) -> Text:
        text = Text("The model did not load: ", style="bold")
        text.append_text(literal(self.engine.model_error or ""))
        text.append("\nSaved conversations can still be browsed (ctrl+b) and replayed (ctrl+o). "
                    "ctrl+p → Switch model tries another.")
        return text

    # --- talking ----------------------------------------------------------------------------------

    def refuse_while_replying(self) -> bool:
        if self.generating:
            self.notify("a reply is still coming: press esc to stop it first", severity="warning")
        return self.generating

    def _refuse_without_model(self) -> bool:
        if self.engine.model_status == FAILED:
            self.notify(f"no model to reply: {self.engine.model_error}", severity="error", markup=False)
            return True
        return False

    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        text = event.text
        if not text.strip():
            event.chat_input.clear()
            return  # empty messages are ignored
        try:
            text = clean_user_text(text)
        except EngineError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return
        if self.generating:  # it waits for the reply to end, said in the banner (enter used to do nothing)
            self.outbox.put(text)
            event.chat_input.clear()
            self._show_outbox()
            return
        if self._refuse_without_model():
            return
        event.chat_input.clear()
        await self._send(text)

    async def _send(self, text: str) -> None:
        """Show `text` and its reply-to-be, and start the reply (an edit's, when editing)."""
        if self.editing and self.conversation is not None:
            start = partial(await self.edit_start(), text)
        elif self.conversation is not None:
            start = partial(self.engine.send, self.conversation.id, text)
        else:  # saved, with the settings, genres and persona chosen for it, on the worker: the database may be busy
            start = partial(self.engine.send, None, text, self.settings, genres=list(self.genres), persona=self.persona)
        bot = TurnView(BOT, status="partial", speaker=self.persona.character)
        await self._start_reply(start, [TurnView(USER, text, created_at=utc_now()), bot], text)

    async def regenerate(self) -> None:
        if self.refuse_while_replying() or self.conversation is None or self._refuse_without_model():
            return
        log = self.chat_log
        index = log.last_user_index()
        if index is None:
            self.notify("nothing to regenerate yet: send a message first", severity="warning")
            return
        self.end_edit()
        for view in log.views()[index + 1:]:
            await view.remove()
        bot = TurnView(BOT, status="partial", speaker=self.persona.character)
        await self._start_reply(partial(self.engine.regenerate, self.conversation.id), [bot])

    def edit_last(self) -> None:
        if self.outbox:  # ↑ takes back what waits to be sent
            self.chat_input.text = "\n".join(t for t in (self.outbox.take_back(), self.chat_input.text) if t)
            self.chat_input.move_cursor(self.chat_input.document.end)
            self._show_outbox()
            return
        if self.refuse_while_replying() or self.conversation is None:
            return
        last = next((v for v in reversed(self.chat_log.views()) if v.role == USER), None)
        if last is None or last.message is None:
            self.notify("no message of yours to edit yet", severity="warning")
            return
        self.begin_edit(last.message)

    def select_last(self) -> None:
        views = self.chat_log.views()
        if views:
            views[-1].focus()
        else:
            self.notify("no messages yet", severity="warning")

    def fork_here(self) -> None:
        """Fork at the last message (f on a message forks there)."""
        views = self.chat_log.views()
        if self.conversation is None or not views or views[-1].message is None:
            self.notify("nothing to fork yet: send a message first", severity="warning")
            return
        views[-1].post_message(TurnView.Act(views[-1], "fork"))

    @property
    def edit_banner(self) -> Static:
        return self.query_one("#edit-banner", Static)

    def end_edit(self) -> None:
        super().end_edit()
        self._show_outbox()  # a message waiting to be sent keeps its banner

    def _show_outbox(self) -> None:
        """The banner says what waits to be sent (or hides, when nothing does and no edit is on)."""
        banner = self.query_one("#edit-banner", Static)
        if self.outbox:
            banner.update(self.outbox.banner())
        banner.display = bool(self.outbox) or self.editing

    async def _send_waiting(self) -> None:
        """After a reply: the oldest waiting message goes out (back into the box if it can't)."""
        text = self.outbox.take()
        self._show_outbox()
        if text is None:
            return
        if self._refuse_without_model():
            self.chat_input.text = "\n".join(t for t in (text, self.outbox.take_back(), self.chat_input.text) if t)
            self._show_outbox()
            return
        await self._send(text)

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.stop()
        self.chat_input.focus()

