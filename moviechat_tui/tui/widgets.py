"""The chat screen's widgets: messages, the message box, the status line, the sidebar.

Every piece of user or model text goes through `rich.text.Text`, never through markup, so
"[bold red]hi[/]" in a message is shown exactly as typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.widgets import Input, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from ..core.captions import CLOCK, display_time
from ..core.dialogue import BOT, USER, Conditioning
from ..core.store import Conversation, Message
from .format import SPEAKERS, literal

STATUS_LABELS = {"partial": "…", "cancelled": "cancelled", "error": "error"}


class MessageView(Vertical):
    """One message: a speaker/time line over the text; a bot reply grows as it streams."""

    def __init__(self, role: str, text: str = "", *, created_at: str | None = None, status: str = "complete",
                 note: str = "", detail: str = "", time_format: str = CLOCK, message: Message | None = None,
                 speaker: str = "") -> None:
        super().__init__(classes=f"message {role}")
        self.role, self.text, self.created_at, self.status, self.note = role, text, created_at, status, note
        self.detail, self.time_format = detail, time_format
        self.message = message  # the stored message (None until it is saved)
        self.speaker = speaker.upper() if speaker else SPEAKERS.get(role, role.upper())  # the character's name
        self.set_class(status != "complete", f"-{status}")

    @classmethod
    def of(cls, message: Message, bot_name: str = "") -> "MessageView":
        return cls(message.role, message.text, created_at=message.created_at, status=message.status, message=message,
                   speaker=bot_name if message.role != USER else "")

    def compose(self):
        yield Static(self._meta(), classes="meta")
        yield Static(self._body(), classes="body")

    def _meta(self) -> Text:
        meta = literal(self.speaker, "bold")
        if self.created_at:
            meta.append(f"  {display_time(self.created_at, self.time_format)}", style="dim")
        if self.detail:
            meta.append(f" · {self.detail}", style="dim")
        if self.status != "complete":
            meta.append(f"  {STATUS_LABELS.get(self.status, self.status)}", style="italic")
        if self.note:
            meta.append(f"  {self.note}", style="italic")
        meta.append_text(version_marks(self.message))
        return meta

    def _body(self) -> Text:
        if self.text:
            return literal(self.text)
        return Text("…" if self.status == "partial" else "(no text)", style="dim italic")

    def _refresh(self) -> None:
        if self.is_mounted:
            self.query_one(".meta", Static).update(self._meta())
            self.query_one(".body", Static).update(self._body())

    def relabel(self, speaker: str) -> None:
        self.speaker = speaker.upper() if speaker else SPEAKERS.get(self.role, self.role.upper())
        self._refresh()

    def append(self, piece: str) -> None:
        self.set_text(self.text + piece)

    def set_text(self, text: str) -> None:
        self.text = text
        if self.is_mounted:
            self.query_one(".body", Static).update(self._body())

    def set_message(self, message: Message) -> None:
        """The stored message it shows, again (its versions or rating changed)."""
        self.message = message
        self._refresh()

    def finish(self, message: Message | None, status: str, note: str = "") -> None:
        """The stored outcome of a streamed reply (message is None if nothing was generated)."""
        self.remove_class(f"-{self.status}")
        if message is not None:
            self.text, self.created_at, self.message = message.text, message.created_at, message
        self.status, self.note = status, note
        self.set_class(status != "complete", f"-{status}")
        self._refresh()


def version_marks(message: Message | None) -> Text:
    """"  ‹ 2/3 ›  rated up · out of character" for the meta line ("" when there is nothing to say)."""
    marks = Text()
    if message is None:
        return marks
    if message.alternatives > 1:
        marks.append(f"  ‹ {message.alternative}/{message.alternatives} ›", style="bold")
    rating = [f"rated {message.rating}"] if message.rating else []
    if message.out_of_character:
        rating.append("out of character")
    if rating:
        marks.append("  " + " · ".join(rating), style="italic")
    return marks


class TurnView(MessageView):
    """A message of the open conversation: focusable (click it, or shift+tab from the message box),
    with keys for its versions, editing, regenerating, forking and rating. The keys post `Act`; the
    chat (tui/turn_actions.py) carries them out."""

    can_focus = True
    BINDINGS = [
        Binding("left", "act('step', -1)", "‹ Version"),
        Binding("right", "act('step', 1)", "Version ›"),
        Binding("e", "act('edit')", "Edit"),
        Binding("r", "act('regenerate')", "Regenerate"),
        Binding("f", "act('fork')", "Fork"),
        Binding("plus,equals_sign", "act('rate', 'up')", "Good", key_display="+"),
        Binding("minus", "act('rate', 'down')", "Bad", key_display="-"),
        Binding("o", "act('out_of_character')", "Out of character"),
        Binding("c", "act('copy')", "Copy"),
        Binding("up,k", "move(-1)", "Previous", show=False),
        Binding("down,j", "move(1)", "Next", show=False),
        Binding("escape", "screen.focus_input", "Back", show=False),
    ]
    ACTIONS = {"step": None, "fork": None, "edit": USER, "regenerate": BOT, "rate": BOT, "out_of_character": BOT,
               "copy": None}

    @dataclass
    class Act(TextualMessage):
        view: "TurnView"
        action: str  # one of TurnView.ACTIONS
        argument: object = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "act":
            return True
        name = parameters[0]
        if self.message is None or self.ACTIONS[name] not in (None, self.role):
            return False
        if name == "step":
            return self.message.alternatives > 1
        return True

    def action_act(self, action: str, argument: object = None) -> None:
        self.post_message(self.Act(self, action, argument))

    def action_move(self, step: int) -> None:
        views = list(self.parent.query_children(TurnView)) if self.parent else [self]
        index = views.index(self) + step
        if 0 <= index < len(views):
            views[index].focus()


class ChatLog(VerticalScroll):
    """The conversation, oldest at the top; stays scrolled to the bottom while a reply streams."""

    def show(self, messages: list[Message], hint: Text | None = None, bot_name: str = "") -> None:
        self.remove_children()
        if hint is not None and not messages:
            self.mount(Static(hint, classes="hint"))
        self.mount_all([TurnView.of(m, bot_name) for m in messages])
        self.scroll_end(animate=False)
        self.anchor()

    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

    def last_user_index(self) -> int | None:
        views = self.views()
        return next((i for i in range(len(views) - 1, -1, -1) if views[i].role == USER), None)

    async def add(self, *views: MessageView) -> None:
        for hint in self.query_children(".hint"):
            await hint.remove()
        await self.mount_all(views)
        self.scroll_end(animate=False)
        self.anchor()


class ChatInput(TextArea):
    """The message box: Enter sends, Ctrl+J (or Alt+Enter) starts a new line; pastes keep every line."""

    BINDINGS = [Binding("up", "edit_last", "Edit last", show=False)]

    @dataclass
    class Submitted(TextualMessage):
        chat_input: "ChatInput"
        text: str

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         highlight_cursor_line=False, **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("ctrl+j", "alt+enter", "shift+enter"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)

    async def action_edit_last(self) -> None:
        # Up in an empty box brings back the last message (as in most chat apps); else it moves the cursor.
        if not self.text:
            await self.run_action("screen.edit_last")
        else:
            self.action_cursor_up()


class StatusBar(Horizontal):
    """One line: the conversation on the left; model, decoding settings and speed on the right."""

    def compose(self):
        yield Static(id="status-title")
        yield Static(id="status-info")

    def show(self, title: Text, info: Text) -> None:
        self.query_one("#status-title", Static).update(title)
        self.query_one("#status-info", Static).update(info)


LABEL_WIDTH = 29  # the sidebar's width less the marker and the scrollbar


def conversation_label(conversation: Conversation, current: bool) -> Text:
    title = literal(conversation.title or "(untitled)", style="bold" if current else "")
    title.truncate(LABEL_WIDTH, overflow="ellipsis")
    meta = f"{display_time(conversation.updated_at)} · {conversation.message_count} msg"
    label = Text.assemble(("▶ " if current else "  "), title, "\n  ", (meta, "dim"))
    persona = Conditioning.from_dict(conversation.conditioning)
    if persona.character or persona.movie:  # who the bot plays, on a line of its own
        who = literal(" · ".join(p for p in (persona.character, persona.movie) if p), "italic dim")
        who.truncate(LABEL_WIDTH, overflow="ellipsis")
        label.append_text(Text.assemble("\n  ", who))
    return label


class ConversationList(OptionList):
    """Saved conversations, newest first; keys act on the highlighted one."""

    BINDINGS = [
        Binding("r", "screen.rename_selected", "Rename"),
        Binding("d,delete", "screen.delete_selected", "Delete"),
        Binding("p", "screen.replay_selected", "Replay"),
        Binding("n", "screen.new_conversation", "New", show=False),
        Binding("slash", "screen.search", "Search", show=False),
        Binding("escape", "screen.focus_input", "Back", show=False),
    ]

    def show(self, conversations: list[Conversation], current_id: int | None) -> None:
        highlighted = self.selected_id
        self.clear_options()
        self.add_options(
            Option(conversation_label(c, c.id == current_id), id=str(c.id)) for c in conversations)
        ids = [c.id for c in conversations]
        # Someone browsing the list keeps their place; otherwise the open conversation is highlighted.
        for wanted in (highlighted, current_id) if self.has_focus else (current_id, highlighted):
            if wanted in ids:
                self.highlighted = ids.index(wanted)
                break
        else:
            self.highlighted = 0 if ids else None

    @property
    def selected_id(self) -> int | None:
        if self.highlighted is None or self.option_count == 0:
            return None
        return int(self.get_option_at_index(self.highlighted).id)


class Sidebar(Vertical):
    """Saved conversations with a search box above them."""

    def compose(self):
        yield Static(Text("Saved conversations", style="bold"), classes="sidebar-title")
        yield Input(placeholder="search titles and messages", id="search")
        yield ConversationList(id="conversations")
        yield Static(Text("enter open · r rename\nd delete · p replay · n new", style="dim"),
                     classes="sidebar-hint")
