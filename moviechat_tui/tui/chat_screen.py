"""The chat screen: the status line, the saved conversations, the chat, and the dialogs they open.

The chat itself (messages, the message box, the reply being streamed) is the `Chat` widget; this
screen decides which conversation it shows and keeps the status line and the sidebar in step.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message as TextualMessage
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList

from ..core.captions import settings_summary
from ..core.engine import FAILED, LOADING, WAITING, ChatEngine, checked_title
from ..core.store import Conversation, StoreError
from .busy import write_in_background
from .chat import Chat
from .chat_tools import TOOL_COMMANDS, ChatTools
from .format import literal
from .replay import ReplayScreen
from .screens import ConfirmScreen, PromptScreen, SettingsScreen
from .widgets import ChatInput, ChatLog, ConversationList, Sidebar, StatusBar

WIDE = 110  # columns from which the sidebar starts open

# (palette title, help, action): every action of the chat screen, for the command palette.
COMMANDS = [
    ("New conversation", "Start a fresh conversation (ctrl+n)", "new_conversation"),
    ("Saved conversations", "Show or hide the list of saved conversations (ctrl+b)", "toggle_sidebar"),
    ("Search conversations", "Search saved titles and messages (ctrl+f)", "search"),
    ("Rename conversation", "Give this conversation a new title", "rename_current"),
    ("Delete conversation", "Delete this conversation, after asking", "delete_current"),
    ("Replay conversation", "Play this conversation back turn by turn (ctrl+o)", "replay"),
    ("Regenerate reply", "Answer the last message again (ctrl+r)", "regenerate"),
    ("Edit last message", "Change your last message and send it as a new version (↑ in an empty box)",
     "edit_last"),
    ("Select a message", "Select the last message: its versions, edit, regenerate, fork, rating (shift+tab)",
     "select_message"),
    ("Fork conversation", "A copy of this conversation to take another way (f on a message forks there)",
     "fork_current"),
    ("Stop reply", "Stop the reply being written (esc)", "stop"),
    ("Settings", "Decoding settings and genres of this conversation (ctrl+s)", "settings"),
    *TOOL_COMMANDS,
    ("Toggle light/dark theme", "Switch between the light and dark theme (ctrl+t)", "app.toggle_theme"),
    ("Help", "Keys and a short guide (f1)", "app.help"),
]


class ModelLoadDone(TextualMessage):
    """The engine's background load ended (engine.model_status says how)."""


class ChatScreen(ChatTools, Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("escape", "cancel_edit", "Cancel edit"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+r", "regenerate", "Retry"),
        Binding("ctrl+o", "replay", "Replay"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("f2", "persona", "Character", show=False),  # the footer is full at 80 columns: the hint says it
        Binding("f3", "copy_reply", "Copy reply", show=False),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("pageup", "scroll_chat(-1)", "Scroll up", show=False, priority=True),
        Binding("pagedown", "scroll_chat(1)", "Scroll down", show=False, priority=True),
    ]

    def __init__(self, engine: ChatEngine, conversation_id: int | None = None, replay_id: int | None = None):
        super().__init__()
        self.engine = engine
        self._initial_conversation_id, self._replay_id = conversation_id, replay_id
        self._shown_action_state: tuple | None = None  # check_action's inputs when the footer last redrew

    # --- layout ---------------------------------------------------------------------------------

    def compose(self):
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            yield Chat(self.engine, id="main")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sidebar").display = self.app.size.width >= WIDE
        if self._initial_conversation_id is not None:
            self.open_conversation(self._initial_conversation_id)
        else:
            self.new_conversation()
        if self._replay_id is not None:
            self.action_replay_id(self._replay_id)  # the model loads when the replay is closed
        else:
            self.start_loading()
        self.focus_input()

    @property
    def chat(self) -> Chat:
        return self.query_one(Chat)

    @property
    def conversation(self) -> Conversation | None:
        return self.chat.conversation

    @property
    def chat_input(self) -> ChatInput:
        return self.chat.chat_input

    @property
    def chat_log(self) -> ChatLog:
        return self.chat.chat_log

    @property
    def conversation_list(self) -> ConversationList:
        return self.query_one("#conversations", ConversationList)

    def focus_input(self) -> None:
        self.chat_input.focus()

    def action_focus_input(self) -> None:
        self.focus_input()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.chat.generating
        if action == "cancel_edit":
            return self.chat.editing
        if action == "regenerate":
            return None if self.chat.generating or self.conversation is None else True
        return True

    # --- the model --------------------------------------------------------------------------------

    def start_loading(self) -> None:
        if self.engine.load_in_background(on_done=lambda: self.post_message(ModelLoadDone())):
            self.update_status()

    def on_model_load_done(self) -> None:
        if self.engine.model_status == FAILED:
            self.notify(f"{self.engine.model_error}\nYou can still browse and replay saved conversations.",
                        title="The model did not load", severity="error", timeout=15, markup=False)
            self.chat.show_load_failure()
        elif self.conversation is not None:  # opened while the model loaded: read it now, not at the first reply
            self.engine.read_ahead(self.conversation.id)
        self.update_status()

    # --- status line --------------------------------------------------------------------------------

    def update_status(self) -> None:
        c, chat = self.conversation, self.chat
        title = Text()
        if c is None:
            title.append("new conversation", style="bold")
        else:
            title.append(f"#{c.id} ", style="dim")
            title.append_text(literal(c.title or "(untitled)", "bold"))
        who = replace(chat.persona, genres=()).describe()
        if who:  # the genres are with the settings, on the right
            title.append_text(literal(f" · {who}", "italic"))
        spec = self.engine.model_spec
        info = Text()
        if chat.generating:
            info.append("replying… ", style="italic")
        if self.engine.model_status in (WAITING, LOADING):
            info.append_text(literal(f"loading {spec}…", "italic"))
        elif self.engine.model_status == FAILED:
            info.append_text(literal(f"{spec} failed to load", "bold red"))
        else:
            info.append_text(literal(spec, "bold"))
        info.append_text(literal(self.switch_note(), "italic"))
        if chat.last_first_token_ms is not None:
            info.append(f" · first token {chat.last_first_token_ms:.0f} ms")
        if chat.last_speed:
            info.append(f" · {chat.last_speed:.1f} tok/s")
        info.append_text(literal(f" · {settings_summary(chat.settings, chat.genres)}"))
        self.query_one("#status", StatusBar).show(title, info)

    @on(Chat.Changed)
    def _chat_changed(self) -> None:
        self.update_status()
        self.refresh_sidebar()
        # Only when what check_action answers changed, and not in a reply's first FOOTER_DELAY: the
        # footer recomposes all its keys, which takes a core from the model's two threads (esc works
        # all the same, and the stop button shows). Most replies end before: no recompose at all.
        if self._action_state() != self._shown_action_state and not self.chat.footer_waits:
            self.refresh_bindings()

    def _action_state(self) -> tuple:
        """What check_action's answers depend on."""
        return self.chat.generating, self.chat.editing, self.conversation is None

    def refresh_bindings(self) -> None:
        self._shown_action_state = self._action_state()
        super().refresh_bindings()

    # --- conversations --------------------------------------------------------------------------

    def saved_conversations(self, query: str | None = None) -> list[Conversation]:
        try:
            return self.engine.list_conversations(query=query)
        except StoreError as exc:
            self.show_error(exc)
            return []

    def refresh_sidebar(self) -> None:
        query = self.query_one("#search", Input).value
        self.conversation_list.show(self.saved_conversations(query), self.conversation and self.conversation.id)

    def show_error(self, exc: Exception) -> None:
        self.notify(str(exc), severity="error", timeout=8, markup=False)

    def _show(self, conversation: Conversation | None, messages) -> None:
        self.chat.show(conversation, messages)
        self._chat_changed()

    def open_conversation(self, conversation_id: int) -> bool:
        if self.chat.refuse_while_replying():
            return False
        try:
            conversation, messages = self.engine.transcript(conversation_id)
        except StoreError as exc:
            self.show_error(exc)
            self.refresh_sidebar()
            return False
        self._show(conversation, messages)
        self.engine.read_ahead(conversation_id)  # in the background: the next reply reads only the new message
        self.focus_input()
        return True

    def new_conversation(self) -> None:
        """An empty chat; it is saved when its first message is sent (and keeps the current settings)."""
        self._show(None, [])

    def action_new_conversation(self) -> None:
        if not self.chat.refuse_while_replying():
            self.new_conversation()
            self.focus_input()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        sidebar.display = not sidebar.display
        if sidebar.display:
            self.refresh_sidebar()
            self.conversation_list.focus()
        else:
            self.focus_input()

    def action_search(self) -> None:
        self.query_one("#sidebar").display = True
        self.refresh_sidebar()
        self.query_one("#search", Input).focus()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.refresh_sidebar()

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.conversation_list.focus()

    @on(OptionList.OptionSelected, "#conversations")
    def _conversation_chosen(self, event: OptionList.OptionSelected) -> None:
        self.open_conversation(int(event.option.id))

    def _target(self, from_list: bool) -> Conversation | None:
        conversation_id = self.conversation_list.selected_id if from_list else (
            self.conversation and self.conversation.id)
        if conversation_id is None:
            self.notify("no saved conversation to act on" if from_list else
                        "this conversation is not saved yet: send a message first", severity="warning")
            return None
        try:
            return self.engine.get_conversation(conversation_id)
        except StoreError as exc:
            self.show_error(exc)
            return None

    def action_rename_selected(self) -> None:
        self._rename(self._target(from_list=True))

    def action_rename_current(self) -> None:
        self._rename(self._target(from_list=False))

    def _rename(self, conversation: Conversation | None) -> None:
        if conversation is None:
            return

        def saved(_) -> None:
            if self.conversation and self.conversation.id == conversation.id:
                self.chat.reload_conversation()
            self.update_status()
            self.refresh_sidebar()

        def renamed(title: str | None) -> None:
            if title is not None:  # saved on a worker: the database may be busy
                write_in_background(self.app, partial(self.engine.rename, conversation.id, title), saved)

        self.app.push_screen(PromptScreen(f"Rename conversation #{conversation.id}", conversation.title,
                                          checked_title), renamed)

    def action_delete_selected(self) -> None:
        self._delete(self._target(from_list=True))

    def action_delete_current(self) -> None:
        self._delete(self._target(from_list=False))

    def _delete(self, conversation: Conversation | None) -> None:
        if conversation is None:
            return
        current = self.conversation is not None and self.conversation.id == conversation.id
        if current and self.chat.refuse_while_replying():
            return
        question = Text("Delete ")
        question.append_text(literal(conversation.title or "(untitled)", "bold"))
        question.append(f"?\nIts {conversation.message_count} messages will be gone for good.")

        def deleted(_) -> None:
            if self.conversation is not None and self.conversation.id == conversation.id:
                self.new_conversation()
            self.refresh_sidebar()
            self.notify("conversation deleted", timeout=3)

        def answered(yes: bool | None) -> None:
            if yes:  # on a worker: the database may be busy
                write_in_background(self.app, partial(self.engine.delete, conversation.id), deleted)

        self.app.push_screen(ConfirmScreen(question), answered)

    # --- the chat's actions -------------------------------------------------------------------------

    async def action_regenerate(self) -> None:
        await self.chat.regenerate()

    def action_edit_last(self) -> None:
        self.chat.edit_last()

    def action_select_message(self) -> None:
        self.chat.select_last()

    def action_fork_current(self) -> None:
        self.chat.fork_here()

    def action_stop(self) -> None:
        self.chat.stop()
        self.focus_input()

    def action_cancel_edit(self) -> None:
        self.chat.end_edit()
        self.focus_input()

    def action_scroll_chat(self, direction: int) -> None:
        log = self.chat_log
        log.scroll_page_down() if direction > 0 else log.scroll_page_up()

    # --- replay, settings ---------------------------------------------------------------------------

    def action_replay(self, conversation_id: int | None = None) -> None:
        if conversation_id is None:
            target = self._target(from_list=self.focused is self.conversation_list)
            if target is None:
                return
            conversation_id = target.id
        self.action_replay_id(conversation_id)

    def action_replay_selected(self) -> None:
        target = self._target(from_list=True)
        if target is not None:
            self.action_replay_id(target.id)

    def action_replay_id(self, conversation_id: int) -> None:
        try:
            conversation, messages = self.engine.transcript(conversation_id)
        except StoreError as exc:
            self.show_error(exc)
            return
        self.app.push_screen(ReplayScreen(conversation, messages), self._replay_closed)

    def _replay_closed(self, conversation_id: int | None) -> None:
        if self._replay_id is not None and conversation_id == self._replay_id:
            self._replay_id = None  # opened from `moviechat-tui replay ID`: continue it here
            self.open_conversation(conversation_id)
        self.start_loading()
        self.focus_input()

    def action_settings(self) -> None:
        model = Text("Model".ljust(21))
        model.append_text(literal(self.engine.model_spec, "bold"))
        model.append("\n(ctrl+p → Switch model loads another while this one answers)", style="dim")
        scope = f"of conversation #{self.conversation.id}" if self.conversation else "of the new conversation"
        chat = self.chat
        self.app.push_screen(SettingsScreen(chat.settings, chat.genres, model, chat.apply_settings, scope),
                             lambda saved: self.focus_input())
