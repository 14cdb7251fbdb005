"""The Textual app: chat with streamed replies, saved conversations, replay and settings.

    run_app(model_spec, db_path, conversation_id=None, replay_id=None) -> exit code

The app holds the engine, the theme, help, the command palette and what happens while another
program holds the database (busy.py); its default screen is the ChatScreen (chat_screen.py), whose
Chat widget (chat.py) streams the replies.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.screen import Screen

from ..core.engine import ChatEngine
from ..core.store import Store
from .busy import BUSY_NOTICE, BUSY_SECONDS, DatabaseBusy, RetryWhileBusy, Written
from .chat_screen import COMMANDS, ChatScreen
from .screens import HelpScreen
from .terminal import driver_class, watch_terminal

# (keys, what they do): the help screen and docs/tui.md list these.
KEYS = [
    ("enter", "send the message (while a reply streams, it waits and goes out when the reply ends)"),
    ("ctrl+j / alt+enter", "new line in the message"),
    ("esc", "stop the reply (the text so far is kept, marked cancelled) · cancel an edit"),
    ("↑ in an empty box", "edit your last message (sent as a new version) · take back a message that waits"),
    ("ctrl+r", "regenerate the last reply (the old one stays a version away)"),
    ("shift+tab, click", "select a message: ← → its versions · e edit · r regenerate · f fork · + / - rate"
                         " · o out of character · c copy · ↑ ↓ other messages · esc back"),
    ("ctrl+n", "new conversation"),
    ("ctrl+b", "show / hide saved conversations"),
    ("ctrl+f", "search saved conversations"),
    ("ctrl+o", "replay this conversation"),
    ("ctrl+s", "settings: temperature, top-p, top-k, penalties, length, genres"),
    ("f2", "who you talk to: a film and one of its characters, or names you type"),
    ("f3", "copy the last reply (ctrl+p → Copy conversation copies it all)"),
    ("ctrl+t", "light / dark theme"),
    ("pgup / pgdn", "scroll the conversation"),
    ("ctrl+p", "command palette: every action (Switch model, Copy conversation…), open any saved conversation"),
    ("f1", "this help"),
    ("ctrl+q", "quit (everything is already saved)"),
    ("", ""),
    ("in the list", "enter open · r rename · d delete · p replay · n new · / search · esc back"),
    ("in a replay", "space play/pause · n or → next turn · + / - speed · r restart · esc back"),
]

GUIDE = (
    "Every message is saved as it is written, so quitting (or a crash) mid-reply loses nothing. "
    "Nothing is overwritten: a regenerated reply or an edited message is a new version beside the old "
    "one (‹ 2/3 ›), and the bot answers from the versions on screen. "
    "Settings and who you talk to belong to the conversation: its replay shows what produced each reply. "
    "ctrl+p → Switch model loads another model (any spec `moviechat-tui models` lists, or a directory) "
    "while the current one keeps answering. Copying uses the terminal's clipboard (OSC 52) and also "
    "writes the text to a file, in case the terminal ignores it."
)


class ConversationCommands(Provider):
    """Command palette hits that open saved conversations by title (titles shown literally)."""

    async def search(self, query: str) -> Hits:
        screen = self.screen
        if not isinstance(screen, ChatScreen):
            return
        matcher = self.matcher(query)
        for conversation in screen.saved_conversations():
            title = f"Open: {conversation.title or '(untitled)'}"
            if (score := matcher.match(title)) > 0:
                yield Hit(score, Content(title), partial(screen.open_conversation, conversation.id),
                          help=f"conversation #{conversation.id}, {conversation.message_count} messages")

    async def discover(self) -> Hits:
        screen = self.screen
        if not isinstance(screen, ChatScreen):
            return
        for conversation in screen.saved_conversations()[:5]:
            yield DiscoveryHit(Content(f"Open: {conversation.title or '(untitled)'}"),
                               partial(screen.open_conversation, conversation.id),
                               help=f"conversation #{conversation.id}")


class MovieChatApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "moviechat"
    COMMANDS = App.COMMANDS | {ConversationCommands}
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
    ]

    def __init__(self, engine: ChatEngine, conversation_id: int | None = None, replay_id: int | None = None):
        super().__init__()
        self.engine = engine
        self._initial_conversation_id, self._replay_id = conversation_id, replay_id

    def get_driver_class(self):
        return driver_class(super().get_driver_class())  # one that outlives a closed terminal

    def get_default_screen(self) -> ChatScreen:
        return ChatScreen(self.engine, self._initial_conversation_id, self._replay_id)

    def on_mount(self) -> None:
        # No write on the event loop; one that waits for another program's lock says so and retries.
        self._busy = RetryWhileBusy(self, self.engine.store, give_up=self._reply_stopped)
        self._busy_shown = 0.0
        self.theme = "textual-dark"
        # A closed terminal ends the app as ctrl+q would, instead of leaving it spinning on no input.
        self._unwatch_terminal = watch_terminal(self, lambda: self.call_later(self.action_quit))

    def on_unmount(self) -> None:
        self._busy.uninstall()
        self._unwatch_terminal()

    def _reply_stopped(self, worker) -> bool:
        return worker.group == "reply" and self.chat_screen.chat.stop_requested

    def on_database_busy(self, message: DatabaseBusy) -> None:
        if time.monotonic() - self._busy_shown > BUSY_SECONDS:  # one notice at a time, while it lasts
            self._busy_shown = time.monotonic()
            self.notify(BUSY_NOTICE, severity="warning", timeout=BUSY_SECONDS + 1, markup=False)

    def on_written(self, message: Written) -> None:
        """A write_in_background finished (busy.py): its follow-up, or its error."""
        if message.error is not None:
            self.notify(message.error, severity="error", timeout=8, markup=False)
        elif message.done is not None:
            message.done(message.result)

    @property
    def chat_screen(self) -> ChatScreen:
        return self.screen_stack[0]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(KEYS, GUIDE))

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ChatScreen):
            for title, help_text, action in COMMANDS:
                yield SystemCommand(title, help_text, partial(screen.run_action, action))

    async def action_quit(self) -> None:
        reply = self.chat_screen.chat.reply
        if reply is not None:
            reply.cancel()  # what was shown stays saved, marked cancelled
        await super().action_quit()


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
