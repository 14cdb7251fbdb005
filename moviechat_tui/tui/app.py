"""The Textual app: chat with streamed replies, saved conversations, replay and settings.

    run_app(model_spec, db_path, conversation_id=None, replay_id=None) -> exit code

Replies generate on a thread worker that iterates the engine's Reply and posts each piece
to the UI (post_message is thread-safe and never blocks the worker), so the UI stays live and
Esc can cancel. The model loads once, on another thread worker, while the user reads or types.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message as TextualMessage
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, OptionList, Static
from textual.worker import get_current_worker

from ..core.dialogue import BOT, USER
from ..core.engine import ChatEngine, EngineError, Reply, clean_user_text
from ..core.generation import GenerationSettings
from ..core.loading import ModelLoadError
from ..core.store import Conversation, Message, Store, StoreError, utc_now
from .busy import BUSY_NOTICE, BUSY_SECONDS, DatabaseBusy, RetryWhileBusy, Written, write_in_background
from .format import genres_of, literal, settings_summary
from .replay import ReplayScreen
from .screens import ConfirmScreen, HelpScreen, PromptScreen, SettingsScreen
from .widgets import ChatInput, ChatLog, ConversationList, MessageView, Sidebar, StatusBar

WIDE = 110  # columns from which the sidebar starts open

# (keys, what they do): the help screen and docs/tui.md list these.
KEYS = [
    ("enter", "send the message"),
    ("ctrl+j / alt+enter", "new line in the message"),
    ("esc", "stop the reply (the text so far is kept, marked cancelled) · cancel an edit"),
    ("↑ in an empty box", "edit and resend your last message"),
    ("ctrl+r", "regenerate the last reply"),
    ("ctrl+n", "new conversation"),
    ("ctrl+b", "show / hide saved conversations"),
    ("ctrl+f", "search saved conversations"),
    ("ctrl+o", "replay this conversation"),
    ("ctrl+s", "settings: temperature, top-p, top-k, penalties, length, genres"),
    ("ctrl+t", "light / dark theme"),
    ("pgup / pgdn", "scroll the conversation"),
    ("ctrl+p", "command palette: every action, and open any saved conversation"),
    ("f1", "this help"),
    ("ctrl+q", "quit (everything is already saved)"),
    ("", ""),
    ("in the list", "enter open · r rename · d delete · p replay · n new · / search · esc back"),
    ("in a replay", "space play/pause · n or → next turn · + / - speed · r restart · esc back"),
]

GUIDE = (
    "Every message is saved as it is written, so quitting (or a crash) mid-reply loses nothing. "
    "Settings belong to the conversation: its replay shows what produced each reply. "
    "The model is chosen at start: restart with --model SPEC to change it "
    "(moviechat-tui models lists the specs)."
)

# (palette title, help, action): every action of the chat screen, for the command palette.
COMMANDS = [
    ("New conversation", "Start a fresh conversation (ctrl+n)", "new_conversation"),
    ("Saved conversations", "Show or hide the list of saved conversations (ctrl+b)", "toggle_sidebar"),
    ("Search conversations", "Search saved titles and messages (ctrl+f)", "search"),
    ("Rename conversation", "Give this conversation a new title", "rename_current"),
    ("Delete conversation", "Delete this conversation, after asking", "delete_current"),
    ("Replay conversation", "Play this conversation back turn by turn (ctrl+o)", "replay"),
    ("Regenerate reply", "Answer the last message again (ctrl+r)", "regenerate"),
    ("Edit last message", "Change your last message and resend it (↑ in an empty box)", "edit_last"),
    ("Stop reply", "Stop the reply being written (esc)", "stop"),
    ("Settings", "Decoding settings and genres of this conversation (ctrl+s)", "settings"),
    ("Toggle light/dark theme", "Switch between the light and dark theme (ctrl+t)", "toggle_theme"),
    ("Help", "Keys and a short guide (f1)", "help"),
]


# Actions that act on the chat screen: off while a dialog or the replay is on top of it.
CHAT_ACTIONS = {action for _, _, action in COMMANDS} - {"toggle_theme", "help"} | {
    "cancel_edit", "focus_input", "rename_selected", "delete_selected", "replay_selected", "scroll_chat"}


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


@dataclass
class ModelLoadDone(TextualMessage):
    error: str | None


class ConversationCommands(Provider):
    """Command palette hits that open saved conversations by title (titles shown literally)."""

    async def search(self, query: str) -> Hits:
        app = self.app
        if not isinstance(app, MovieChatApp) or self.screen is not app.chat_screen:
            return
        matcher = self.matcher(query)
        for conversation in app.saved_conversations():
            title = f"Open: {conversation.title or '(untitled)'}"
            if (score := matcher.match(title)) > 0:
                yield Hit(score, Content(title), partial(app.open_conversation, conversation.id),
                          help=f"conversation #{conversation.id}, {conversation.message_count} messages")

    async def discover(self) -> Hits:
        app = self.app
        if not isinstance(app, MovieChatApp) or self.screen is not app.chat_screen:
            return
        for conversation in app.saved_conversations()[:5]:
            yield DiscoveryHit(Content(f"Open: {conversation.title or '(untitled)'}"),
                               partial(app.open_conversation, conversation.id),
                               help=f"conversation #{conversation.id}")


class MovieChatApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "moviechat"
    COMMANDS = App.COMMANDS | {ConversationCommands}
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("escape", "cancel_edit", "Cancel edit"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+r", "regenerate", "Retry"),
        Binding("ctrl+o", "replay", "Replay"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+f", "search", "Search", show=False),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("pageup", "scroll_chat(-1)", "Scroll up", show=False, priority=True),
        Binding("pagedown", "scroll_chat(1)", "Scroll down", show=False, priority=True),
    ]

    def __init__(self, engine: ChatEngine, conversation_id: int | None = None, replay_id: int | None = None):
        super().__init__()
        self.engine = engine
        self.conversation: Conversation | None = None
        self.settings: GenerationSettings = engine.settings
        self.genres: list[str] = []
        self.model_state = "ready" if engine.model_loaded else "waiting"  # waiting|loading|ready|failed
        self.model_error: str | None = None
        self.reply: Reply | None = None
        self.generating = False
        self.editing = False
        self.last_speed: float | None = None
        self._stop_requested = False
        self._sent_text: str | None = None
        self._initial_conversation_id, self._replay_id = conversation_id, replay_id

    # --- layout ---------------------------------------------------------------------------------

    def compose(self):
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield ChatLog(id="chat-log")
                yield Static(id="edit-banner")
                with Horizontal(id="composer"):
                    yield ChatInput(id="chat-input", placeholder="Say something to the movie… (enter sends)")
                    yield Button("■ Stop", id="stop", variant="error", tooltip="stop the reply (esc)")
        yield Footer()

    def on_mount(self) -> None:
        # No write on the event loop; one that waits for another program's lock says so and retries.
        self._busy = RetryWhileBusy(self, self.engine.store,
                                    give_up=lambda worker: worker.group == "reply" and self._stop_requested)
        self._busy_shown = 0.0
        self.theme = "textual-dark"
        self.chat_screen = self.screen
        self.query_one("#sidebar").display = self.size.width >= WIDE
        if self._initial_conversation_id is not None:
            self.open_conversation(self._initial_conversation_id)
        else:
            self.new_conversation()
        if self._replay_id is not None:
            self.action_replay(self._replay_id)  # the model loads when the replay is closed
        else:
            self.start_loading()
        self.focus_input()

    def on_unmount(self) -> None:
        self._busy.uninstall()

    def on_database_busy(self, message: DatabaseBusy) -> None:
        if time.monotonic() - self._busy_shown > BUSY_SECONDS:  # one notice at a time, while it lasts
            self._busy_shown = time.monotonic()
            self.notify(BUSY_NOTICE, severity="warning", timeout=BUSY_SECONDS + 1, markup=False)

    def on_written(self, message: Written) -> None:
        if message.error is not None:
            self.notify(message.error, severity="error", timeout=8, markup=False)
        elif message.done is not None:
            message.done(message.result)

    @property
    def chat_input(self) -> ChatInput:
        return self.chat_screen.query_one("#chat-input", ChatInput)

    @property
    def chat_log(self) -> ChatLog:
        return self.chat_screen.query_one("#chat-log", ChatLog)

    @property
    def conversation_list(self) -> ConversationList:
        return self.chat_screen.query_one("#conversations", ConversationList)

    def focus_input(self) -> None:
        self.chat_input.focus()

    def action_focus_input(self) -> None:
        self.focus_input()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in CHAT_ACTIONS:
            return True  # Textual's own (quit, focus_next, ...), help and theme: everywhere
        if self.screen is not getattr(self, "chat_screen", None):
            return False  # a dialog or the replay screen is up: its own keys apply
        if action == "stop":
            return self.generating
        if action == "cancel_edit":
            return self.editing
        if action in ("regenerate",):
            return None if self.generating or self.conversation is None else True
        return True

    # --- the model --------------------------------------------------------------------------------

    def start_loading(self) -> None:
        if self.model_state == "waiting":
            self.model_state = "loading"
            self.update_status()
            # A daemon thread rather than a Textual worker: workers run on asyncio's executor, whose
            # threads are joined at exit, and a load can't be interrupted, so quitting mid-load would hang.
            threading.Thread(target=self._load_model, name="moviechat-load", daemon=True).start()

    def _load_model(self) -> None:
        try:
            self.engine.load()
            error = None
        except ModelLoadError as exc:
            error = str(exc)
        except Exception as exc:  # anything else from a broken model dir: shown, not raised
            error = f"cannot load model {self.engine.model_spec!r}: {exc}".splitlines()[0]
        self.model_state = "failed" if error else "ready"  # set here too: a waiting reply reads it
        self.post_message(ModelLoadDone(error))

    def on_model_load_done(self, message: ModelLoadDone) -> None:
        self.model_error = message.error
        if message.error:
            self.notify(f"{message.error}\nYou can still browse and replay saved conversations.",
                        title="The model did not load", severity="error", timeout=15, markup=False)
            self.chat_log.query(".hint").remove()  # "the bot answers…": not now
            self.chat_log.mount(Static(self._failure_text(), classes="load-error"))
        self.update_status()

    def _failure_text(self) -> Text:
        text = Text("The model did not load: ", style="bold")
        text.append_text(literal(self.model_error or ""))
        text.append("\nSaved conversations can still be browsed (ctrl+b) and replayed (ctrl+o). "
                    "Restart with --model SPEC to try another model.")
        return text

    # --- status line --------------------------------------------------------------------------------

    def update_status(self) -> None:
        c = self.conversation
        title = Text()
        if c is None:
            title.append("new conversation", style="bold")
        else:
            title.append(f"#{c.id} ", style="dim")
            title.append_text(literal(c.title or "(untitled)", "bold"))
        spec = self.engine.model_spec
        info = Text()
        if self.generating:
            info.append("replying… ", style="italic")
        if self.model_state in ("waiting", "loading"):
            info.append_text(literal(f"loading {spec}…", "italic"))
        elif self.model_state == "failed":
            info.append_text(literal(f"{spec} failed to load", "bold red"))
        else:
            info.append_text(literal(spec, "bold"))
        if self.last_speed:
            info.append(f" · {self.last_speed:.1f} tok/s")
        info.append_text(literal(f" · {settings_summary(self.settings, self.genres)}"))
        self.chat_screen.query_one("#status", StatusBar).show(title, info)

    # --- conversations --------------------------------------------------------------------------

    def saved_conversations(self, query: str | None = None) -> list[Conversation]:
        try:
            return self.engine.list_conversations(query=query)
        except StoreError as exc:
            self.show_error(exc)
            return []

    def refresh_sidebar(self) -> None:
        query = self.chat_screen.query_one("#search", Input).value
        self.conversation_list.show(self.saved_conversations(query), self.conversation and self.conversation.id)

    def show_error(self, exc: Exception) -> None:
        self.notify(str(exc), severity="error", timeout=8, markup=False)

    def _refuse_while_replying(self) -> bool:
        if self.generating:
            self.notify("a reply is still coming: press esc to stop it first", severity="warning")
        return self.generating

    def _hint(self) -> Text:
        text = Text("A new conversation. ", style="bold")
        text.append("Type below and press enter; the bot answers like a movie character.\n"
                    "ctrl+b saved conversations · ctrl+s settings · f1 keys · ctrl+p every command")
        return text

    def _show(self, conversation: Conversation | None, messages: list[Message]) -> None:
        self.conversation = conversation
        if conversation is not None:
            self.settings = self.engine.settings_for(conversation)
            self.genres = genres_of(conversation.conditioning)
        self._end_edit()
        self.chat_log.show(messages, None if self.model_state == "failed" else self._hint())
        if self.model_state == "failed":
            self.chat_log.mount(Static(self._failure_text(), classes="load-error"))
        bot = [m for m in messages if m.role == BOT and m.token_count and m.latency_ms]
        self.last_speed = bot[-1].token_count / (bot[-1].latency_ms / 1000) if bot else None
        self.update_status()
        self.refresh_sidebar()
        self.refresh_bindings()

    def open_conversation(self, conversation_id: int) -> bool:
        if self._refuse_while_replying():
            return False
        try:
            conversation, messages = self.engine.transcript(conversation_id)
        except StoreError as exc:
            self.show_error(exc)
            self.refresh_sidebar()
            return False
        self._show(conversation, messages)
        self.focus_input()
        return True

    def new_conversation(self) -> None:
        """An empty chat; it is saved when its first message is sent (and keeps the current settings)."""
        self._show(None, [])

    def action_new_conversation(self) -> None:
        if not self._refuse_while_replying():
            self.new_conversation()
            self.focus_input()

    def _send(self, conversation_id: int | None, text: str, settings: GenerationSettings,
              genres: list[str]) -> Reply:
        """On the reply's worker: save a new conversation first if need be (the database may be busy)."""
        if conversation_id is None:
            conversation_id = self.engine.new_conversation(settings=settings, genres=genres).id
        return self.engine.send(conversation_id, text)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.chat_screen.query_one("#sidebar")
        sidebar.display = not sidebar.display
        if sidebar.display:
            self.refresh_sidebar()
            self.conversation_list.focus()
        else:
            self.focus_input()

    def action_search(self) -> None:
        self.chat_screen.query_one("#sidebar").display = True
        self.refresh_sidebar()
        self.chat_screen.query_one("#search", Input).focus()

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
                self._reload_conversation()
            self.update_status()
            self.refresh_sidebar()

        def renamed(title: str | None) -> None:
            if title is not None:  # saved on a worker: the database may be busy
                write_in_background(self, partial(self.engine.rename, conversation.id, title), saved)

        self.push_screen(PromptScreen(f"Rename conversation #{conversation.id}", conversation.title,
                                      check_title), renamed)

    def action_delete_selected(self) -> None:
        self._delete(self._target(from_list=True))

    def action_delete_current(self) -> None:
        self._delete(self._target(from_list=False))

    def _delete(self, conversation: Conversation | None) -> None:
        if conversation is None:
            return
        current = self.conversation is not None and self.conversation.id == conversation.id
        if current and self._refuse_while_replying():
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
                write_in_background(self, partial(self.engine.delete, conversation.id), deleted)

        self.push_screen(ConfirmScreen(question), answered)

    # --- talking --------------------------------------------------------------------------------

    async def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text
        if not text.strip():
            event.chat_input.clear()
            return  # empty messages are ignored
        if self._refuse_while_replying():
            return
        if self.model_state == "failed":
            self.notify(f"no model to reply: {self.model_error}", severity="error", markup=False)
            return
        try:
            text = clean_user_text(text)
        except EngineError as exc:
            self.show_error(exc)
            return
        log = self.chat_log
        if self.editing and self.conversation is not None:
            index = log.last_user_index()
            for view in log.views()[index:] if index is not None else []:
                await view.remove()
            start = partial(self.engine.edit_last_user_message, self.conversation.id, text)
            self._end_edit()
        else:
            conversation_id = self.conversation.id if self.conversation else None
            start = partial(self._send, conversation_id, text, self.settings, list(self.genres))
        event.chat_input.clear()
        bot = MessageView(BOT, status="partial")
        await log.add(MessageView(USER, text, created_at=utc_now()), bot)
        self._start_reply(start, bot, text)

    async def action_regenerate(self) -> None:
        if self._refuse_while_replying() or self.conversation is None:
            return
        if self.model_state == "failed":
            self.notify(f"no model to reply: {self.model_error}", severity="error", markup=False)
            return
        log = self.chat_log
        index = log.last_user_index()
        if index is None:
            self.notify("nothing to regenerate yet: send a message first", severity="warning")
            return
        self._end_edit()
        for view in log.views()[index + 1:]:
            await view.remove()
        bot = MessageView(BOT, status="partial")
        await log.add(bot)
        self._start_reply(partial(self.engine.regenerate, self.conversation.id), bot)

    def action_edit_last(self) -> None:
        if self._refuse_while_replying() or self.conversation is None:
            return
        last = next((v for v in reversed(self.chat_log.views()) if v.role == USER), None)
        if last is None:
            self.notify("no message of yours to edit yet", severity="warning")
            return
        self.editing = True
        self.chat_input.text = last.text
        self.chat_input.move_cursor(self.chat_input.document.end)
        banner = self.chat_screen.query_one("#edit-banner", Static)
        banner.update(Text("editing your last message: enter resends it (the reply after it is replaced) · "
                           "esc cancels", style="italic"))
        banner.display = True
        self.focus_input()
        self.refresh_bindings()

    def _end_edit(self) -> None:
        if self.editing:
            self.editing = False
            self.chat_input.clear()
        self.chat_screen.query_one("#edit-banner", Static).display = False
        self.refresh_bindings()

    def action_stop(self) -> None:
        if self.generating:
            self._stop_requested = True
            if self.reply is not None:
                self.reply.cancel()
        self.focus_input()

    def action_cancel_edit(self) -> None:
        self._end_edit()
        self.focus_input()

    def _start_reply(self, start: Callable[[], Reply], view: MessageView, text: str | None = None) -> None:
        """Run `start` (which saves the user's message) and stream its reply into `view`.

        `text` is what the user sent: should saving it fail, it goes back into the message box."""
        self._sent_text = text
        self.generating, self._stop_requested = True, False
        self.chat_screen.query_one("#stop", Button).display = True
        self.update_status()
        self.refresh_bindings()
        self._reply_worker(start, view)

    @work(thread=True, group="reply", exit_on_error=False)
    def _reply_worker(self, start: Callable[[], Reply], view: MessageView) -> None:
        worker = get_current_worker()
        reply, error = None, None
        try:
            reply = self.reply = start()  # commits the user message
            self.post_message(ReplyStarted(reply.conversation_id))
            # Iterating would block on the model load, which can't be interrupted: wait here instead,
            # so that esc or quitting still answer (the message stays saved, unanswered).
            while self.model_state == "loading" and not (worker.is_cancelled or self._stop_requested):
                time.sleep(0.05)
            if self.model_state == "loading":
                reply.status = "cancelled"
                self.post_message(ReplyDone(reply, view, None))
                return
            if self._stop_requested:
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

    def _reshow(self) -> None:
        """The open conversation as stored, after something went wrong on the way."""
        if self.conversation is None:
            self._show(None, [])
            return
        try:
            conversation, messages = self.engine.transcript(self.conversation.id)
        except StoreError:
            return
        self._show(conversation, messages)

    def on_reply_started(self, message: ReplyStarted) -> None:
        if self.conversation is None:  # the new conversation is saved now
            try:
                self.conversation = self.engine.get_conversation(message.conversation_id)
            except StoreError as exc:
                self.show_error(exc)
        self._reload_conversation()
        self.update_status()
        self.refresh_sidebar()

    def _reload_conversation(self) -> None:
        if self.conversation is not None:
            try:
                self.conversation = self.engine.get_conversation(self.conversation.id)  # title, count
            except StoreError:
                pass

    def on_reply_piece(self, message: ReplyPiece) -> None:
        message.view.append(message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        reply, view, error = message.reply, message.view, message.error
        self.generating, self.reply = False, None
        self.chat_screen.query_one("#stop", Button).display = False
        if reply is None:  # nothing was saved (say, the database was locked): show what is stored
            self.notify(error or "the message was not sent", severity="error", timeout=8, markup=False)
            if self._sent_text and not self.chat_input.text:
                self.chat_input.text = self._sent_text
            self._reshow()
            return
        status = "error" if error and reply.status == "partial" else reply.status
        view.finish(reply.message, status, note=(error or "") if status == "error" else "")
        if reply.stats.new_tokens:
            self.last_speed = reply.stats.tokens_per_second
        for notice in reply.notices:
            self.notify(notice, timeout=6, markup=False)
        if error:
            self.notify(error, severity="error", timeout=8, markup=False)
        self._reload_conversation()
        self.update_status()
        self.refresh_sidebar()
        self.refresh_bindings()

    # --- replay, settings, help, theme ------------------------------------------------------------

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
        self.push_screen(ReplayScreen(conversation, messages), self._replay_closed)

    def _replay_closed(self, conversation_id: int | None) -> None:
        if self._replay_id is not None and conversation_id == self._replay_id:
            self._replay_id = None  # opened from `moviechat-tui replay ID`: continue it here
            self.open_conversation(conversation_id)
        self.start_loading()
        self.focus_input()

    def action_settings(self) -> None:
        model = Text("Model".ljust(21))
        model.append_text(literal(self.engine.model_spec, "bold"))
        model.append("\n(fixed for this session: restart with --model SPEC to change it)", style="dim")
        scope = f"of conversation #{self.conversation.id}" if self.conversation else "of the new conversation"
        self.push_screen(SettingsScreen(self.settings, self.genres, model, self._apply_settings, scope),
                         lambda saved: self.focus_input())

    def _apply_settings(self, settings: GenerationSettings, genres: list[str]) -> None:
        """Use them now; store them with the conversation on a worker (the database may be busy)."""
        self.settings, self.genres = settings, genres
        self.update_status()
        if self.conversation is None:
            return

        def saved(conversation: Conversation) -> None:
            if self.conversation is not None and self.conversation.id == conversation.id:
                self.conversation = conversation
                self.genres = genres_of(conversation.conditioning)
                self.update_status()

        write_in_background(self, partial(self.engine.update_settings, self.conversation.id, settings, genres), saved)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(KEYS, GUIDE))

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_scroll_chat(self, direction: int) -> None:
        log = self.chat_log
        log.scroll_page_down() if direction > 0 else log.scroll_page_up()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is getattr(self, "chat_screen", None):
            for title, help_text, action in COMMANDS:
                yield SystemCommand(title, help_text, partial(self.run_action, action))

    async def action_quit(self) -> None:
        if self.reply is not None:
            self.reply.cancel()  # what was shown stays saved, marked cancelled
        await super().action_quit()


def check_title(title: str) -> None:
    """A rename's title, checked in its dialog (an empty one keeps it open); saved on a worker."""
    if not " ".join(title.split()):
        raise EngineError("a title can't be empty")


def run_app(model_spec: str, db_path: Path, conversation_id: int | None = None,
            replay_id: int | None = None) -> int:
    """Open the app on `db_path`; StoreError (bad db, unknown id) propagates for the CLI to report."""
    store = Store(db_path)
    try:
        engine = ChatEngine(store, model_spec)
        for wanted in (conversation_id, replay_id):
            if wanted is not None:
                engine.get_conversation(wanted)  # a clear error before the screen switches
        app = MovieChatApp(engine, conversation_id=conversation_id, replay_id=replay_id)
        app.run()
        return app.return_code or 0
    finally:
        store.close()
