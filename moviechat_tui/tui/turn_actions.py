"""What the keys of a selected message do (see TurnView): step between its versions (‹ ›), edit it
and send it as a new version, regenerate a reply, fork the conversation there, rate a reply, copy it.

TurnActions is a mixin of the Chat widget (chat.py). It relies on the Chat's `engine`,
`conversation`, `chat_log`, `chat_input`, `edit_banner` and on refuse_while_replying(),
_refuse_without_model(), reshow() and _start_reply(start, shown, text); a fork is opened by the
screen (`open_conversation`). The engine does the work (core/versions.py), never on the event loop:
switching versions, forking and rating are written on a worker (tui/busy.write_in_background),
regenerate and edit on the reply's worker. This keeps the screen in step with the store.
"""

from __future__ import annotations

from functools import partial

from rich.text import Text

from ..core.dialogue import BOT, USER
from ..core.store import Conversation, Message, StoreError
from .busy import write_in_background
from .clipboard import copy_text
from .widgets import TurnView


class TurnActions:
    editing_id: int | None = None  # the user message being edited (its new version goes beside it)

    @property
    def editing(self) -> bool:
        return self.editing_id is not None

    async def on_turn_view_act(self, event: TurnView.Act) -> None:
        event.stop()
        if event.action == "copy":
            copy_text(self.app, event.view.text, "the reply" if event.view.role == BOT else "your message")
            return
        message = event.view.message
        if self.conversation is None or message is None:
            return
        if event.action in ("rate", "out_of_character"):
            self._rate(event.view, message, event.action, event.argument)
            return
        if self.refuse_while_replying():
            return
        conversation_id = self.conversation.id
        if event.action == "step":
            index = self.chat_log.views().index(event.view)
            write_in_background(self.app, partial(self.engine.show_alternative, conversation_id, message.id,
                                              event.argument), lambda _: self._reshow_at(index))
        elif event.action == "edit":
            self.begin_edit(message)
        elif event.action == "regenerate":
            await self._regenerate(event.view, message)
        elif event.action == "fork":
            write_in_background(self.app, partial(self.engine.fork, conversation_id, message.id), self._forked)

    def _forked(self, forked: Conversation) -> None:
        if self.screen.open_conversation(forked.id):
            self.notify(f"forked into conversation #{forked.id}: what you say now goes there", timeout=5)

    def _rate(self, view: TurnView, message: Message, action: str, rating: str | None) -> None:
        if action == "rate":  # the same key again takes the rating back
            rate = partial(self.engine.rate, message.id, None if message.rating == rating else rating)
        else:
            rate = partial(self.engine.rate, message.id, out_of_character=not message.out_of_character)
        write_in_background(self.app, rate, view.set_message)

    async def _regenerate(self, view: TurnView, message: Message) -> None:
        if self._refuse_without_model():
            return
        self.end_edit()
        for later in self.chat_log.views()[self.chat_log.views().index(view):]:
            await later.remove()
        bot = TurnView(BOT, status="partial", speaker=self.persona.character)
        await self._start_reply(partial(self.engine.regenerate, self.conversation.id, message_id=message.id),
                                [bot])
        bot.focus()  # selected, so ← compares it with the earlier reply once it is written

    def begin_edit(self, message: Message) -> None:
        """Put the message in the box; enter sends it as a new version (see `edit_start`)."""
        last = message.id == next((v.message.id for v in reversed(self.chat_log.views())
                                   if v.role == USER and v.message), None)
        self.editing_id = message.id
        self.chat_input.text = message.text
        self.chat_input.move_cursor(self.chat_input.document.end)
        which = "your last message" if last else f"message {message.position + 1}"
        self.edit_banner.update(Text(f"editing {which}: enter sends it as a new version (the old one and what "
                                     "followed stay one step away: ← →) · esc cancels", style="italic"))
        self.edit_banner.display = True
        self.chat_input.focus()
        self.screen.refresh_bindings()

    def end_edit(self) -> None:
        if self.editing:
            self.editing_id = None
            self.chat_input.clear()
        self.edit_banner.display = False
        self.screen.refresh_bindings()

    async def edit_start(self):
        """For the message being edited: clear the screen from it on; returns engine.edit for it, to be
        called with the new text."""
        message_id, views = self.editing_id, self.chat_log.views()
        index = next((i for i, v in enumerate(views) if v.message and v.message.id == message_id), len(views))
        for view in views[index:]:
            await view.remove()
        self.end_edit()
        return partial(self.engine.edit, self.conversation.id, message_id)

    def sync_turns(self) -> None:
        """After a reply: the views learn their stored messages (ids, ‹ n/m ›); when the screen and the
        store disagree (say, a regenerate that wrote nothing shows the earlier reply again), reshow."""
        if self.conversation is None:
            return
        try:
            messages = self.engine.messages(self.conversation.id)
        except StoreError:
            return
        views = self.chat_log.views()
        if [v.text for v in views] != [m.text for m in messages]:
            self._reshow_at(len(messages) - 1, focus=False)
            return
        for view, message in zip(views, messages):
            view.set_message(message)

    def _reshow_at(self, index: int, focus: bool = True) -> None:
        """The branch on screen as stored, with the message at `index` selected."""
        old = set(self.chat_log.views())
        self.reshow()
        self.post_message(self.Changed())
        if focus:
            self.call_after_refresh(self._select_turn, index, old)

    def _select_turn(self, index: int, old: set, tries: int = 5) -> None:
        views = [view for view in self.chat_log.views() if view not in old and view.is_attached]
        if views:
            views[min(index, len(views) - 1)].focus()
        elif tries:  # the new views are not mounted yet
            self.call_after_refresh(self._select_turn, index, old, tries - 1)
