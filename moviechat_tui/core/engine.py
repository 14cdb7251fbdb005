"""The conversation engine: what the TUI, the web page and the CLI all talk to.

It owns one model (loaded once, lazily, thread-safe) and one Store. A user
message is committed before generation starts; the bot reply is written to the
database piece by piece before each piece is shown, so a crash or kill mid-reply
loses nothing that was on screen.

A conversation is a tree (see core/branches.py): regenerating a reply or editing
a message adds a new version beside the old one, and the model sees the branch
that leads to the message it answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .dialogue import BOT, USER, Conditioning, Turn, next_turn_prefix
from .export import export_json, export_markdown
from .importing import TranscriptError, import_json
from .generation import PIECE_SECONDS, STALL_SECONDS, ReplyStats, ReplyStream, stream_reply, warm_prefix
from .loading import DEFAULT_SPEC, LoadedModel, load_model
from .model_holder import FAILED, LOADING, READY, WAITING, ModelHolder, ModelSwitch  # noqa: F401 (re-exported)
from .settings import GenerationSettings
from .prompting import MAX_CHAT_CONTEXT, plan_prompt, prompt_budget  # noqa: F401  (part of the engine's API)
from .store import Conversation, Message, Store, UnknownMessage
from .user_input import (  # noqa: F401  (part of the engine's API)
    MAX_MESSAGE_CHARS,
    EngineError,
    checked_title,
    checked_user_text,
    clean_user_text,
    default_title,
)
from .versions import VersionActions


def _conditioning(persona: Conditioning, genres: list[str] | None) -> Conditioning:
    """`persona` with its genres replaced by `genres` when those are given."""
    if genres is None:
        return persona
    from dataclasses import replace

    return replace(persona, genres=Conditioning.from_genres(genres).genres)


@dataclass
class Reply:
    """A bot reply in progress: iterate it for text pieces (each already saved).

    After iteration, `message` is the stored bot message (None if nothing was
    generated), `status` its final status and `stats` the timing.
    """

    conversation_id: int
    user_message: Message | None
    notices: list[str] = field(default_factory=list)
    message: Message | None = None
    status: str = "partial"
    error: str | None = None
    stats: ReplyStats = field(default_factory=ReplyStats)
    warm_up: threading.Thread | None = None  # reads the history for the next turn ahead (join to wait)
    replaces: int | None = None  # the reply shown before a regenerate: shown again if no new one comes
    _run: Callable[["Reply"], Iterator[str]] | None = field(default=None, repr=False)
    _stream: ReplyStream | None = field(default=None, repr=False)
    _cancel_requested: bool = field(default=False, repr=False)

    def __iter__(self) -> Iterator[str]:
        run, self._run = self._run, None
        if run is None:
            raise RuntimeError("a reply can be iterated once")
        return run(self)

    def cancel(self) -> None:
        """Stop generating; what was shown is kept, marked cancelled. Safe from any thread."""
        self._cancel_requested = True
        if self._stream is not None:
            self._stream.cancel()

    @property
    def text(self) -> str:
        return self._stream.text if self._stream else ""

    def consume(self) -> str:
        """Run to the end and return the reply text."""
        for _ in self:
            pass
        return self.text


class ChatEngine(VersionActions, ModelHolder):
    """Conversations and replies; regenerate, edit, fork and ratings come from VersionActions, and the
    model (loading, status, switching) from ModelHolder."""

    def __init__(
        self,
        store: Store,
        model_spec: str = DEFAULT_SPEC,
        settings: GenerationSettings | None = None,
        loader: Callable[[str], LoadedModel] = load_model,
        stall_seconds: float = STALL_SECONDS,
        piece_seconds: float = PIECE_SECONDS,
    ) -> None:
        ModelHolder.__init__(self, model_spec or DEFAULT_SPEC, loader)
        self.store = store
        self.stall_seconds = stall_seconds  # a reply with no new token for this long ends as an error
        self.piece_seconds = piece_seconds  # a reply's text is saved and shown at most this often
        self.settings = (settings or GenerationSettings()).validate()

    def switch_model(self, spec: str, on_done: Callable[[ModelSwitch], None] | None = None) -> ModelSwitch:
        """Load `spec` in the background; replies use it once it is ready (one already streaming ends on
        its model). Until then, and for good if it fails, the current model answers. `on_done(switch)`
        is called from the loading thread."""
        spec = " ".join((spec or "").split())
        if not spec:
            raise EngineError("no model spec: give one that `moviechat-tui models` lists, or a directory")
        return self._switch(spec, on_done)

    # --- conversations -----------------------------------------------------

    def new_conversation(
        self, title: str = "", settings: GenerationSettings | None = None, genres: list[str] | None = None,
        persona: Conditioning | None = None,
    ) -> Conversation:
        """A new conversation; `persona` (e.g. from moviechat_tui.cast) says who the bot plays,
        `genres` replace its genres when given."""
        settings = (settings or self.settings).validate()
        conditioning = _conditioning(persona or Conditioning(), genres)
        return self.store.create_conversation(
            title.strip(), model_spec=self.model_spec, settings=settings.to_dict(), conditioning=conditioning.to_dict()
        )

    def list_conversations(self, query: str | None = None, limit: int | None = None) -> list[Conversation]:
        return self.store.list_conversations(query=query or None, limit=limit)

    def get_conversation(self, conversation_id: int) -> Conversation:
        return self.store.get_conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        return self.store.rename_conversation(conversation_id, checked_title(title))

    def delete(self, conversation_id: int) -> None:
        self.store.delete_conversation(conversation_id)

    def search(self, text: str, limit: int = 50):
        if not text.strip():
            raise EngineError("empty search: give some words to look for")
        return self.store.search(text.strip(), limit=limit)

    def messages(self, conversation_id: int) -> list[Message]:
        """The branch on screen, first message first."""
        return self.store.messages(conversation_id)

    def all_messages(self, conversation_id: int) -> list[Message]:
        """Every message, the alternatives included."""
        return self.store.tree(conversation_id)

    def settings_for(self, conversation: Conversation) -> GenerationSettings:
        return GenerationSettings.from_dict({**self.settings.to_dict(), **(conversation.settings or {})})

    def update_settings(
        self, conversation_id: int, settings: GenerationSettings | None = None, genres: list[str] | None = None,
        persona: Conditioning | None = None,
    ) -> Conversation:
        """Change decoding settings, genres and/or the persona (who the bot plays) from the next reply on."""
        changes = {}
        if settings is not None:
            changes["settings"] = settings.validate().to_dict()
        if genres is not None or persona is not None:
            current = Conditioning.from_dict(self.store.get_conversation(conversation_id).conditioning)
            changes["conditioning"] = _conditioning(persona or current, genres).to_dict()
        return self.store.update_conversation(conversation_id, **changes)

    # --- talking -----------------------------------------------------------

    def send(self, conversation_id: int | None, text: str, settings: GenerationSettings | None = None,
             *, genres: list[str] | None = None, persona: Conditioning | None = None) -> Reply:
        """Commit the user's message (after the last one on screen) now; iterate the Reply to generate.

        `conversation_id` None starts a new conversation, with `settings`, `genres` and `persona`
        stored as its own (as new_conversation does), once the text is known to be sendable."""
        text, notices = checked_user_text(text)
        if conversation_id is None:
            conversation = self.new_conversation(settings=settings, genres=genres, persona=persona)
            conversation_id, settings = conversation.id, None  # the reply uses what was just stored
        else:
            conversation = self.store.get_conversation(conversation_id)
        user_message = self.store.add_message(conversation_id, USER, text)
        if not conversation.title:
            self.store.rename_conversation(conversation_id, default_title(text))
        reply = self._reply(conversation_id, user_message, settings)
        reply.notices.extend(notices)
        return reply

    def _reply(self, conversation_id: int, user_message: Message, settings: GenerationSettings | None) -> Reply:
        reply = Reply(conversation_id, user_message)
        reply._run = lambda r: self._generate(r, settings)
        return reply

    def _generate(self, reply: Reply, settings: GenerationSettings | None) -> Iterator[str]:
        store = self.store
        conversation = store.get_conversation(reply.conversation_id)
        settings = (settings or self.settings_for(conversation)).validate()
        try:
            loaded = self.load()
        except Exception as exc:
            reply.status, reply.error = "error", str(exc)
            if reply.replaces is not None:
                _show_again(store, reply.replaces)
            raise
        branch = store.branch_to(reply.user_message.id)  # the branch on screen when the reply began
        history = [Turn(m.role, m.text) for m in branch if m.text and m.status != "error"]
        conditioning = Conditioning.from_dict(conversation.conditioning)
        budget = prompt_budget(loaded, settings)  # the next turn's prompt is fitted the same way
        prompt, settings = plan_prompt(loaded, history, conditioning, settings)
        reply.notices.extend(prompt.notices)

        stream = stream_reply(loaded, prompt.ids, settings, self.stall_seconds, self.piece_seconds)
        reply._stream = stream
        if reply._cancel_requested:
            stream.cancel()
        message = None
        started = time.perf_counter()
        try:
            for piece in stream:
                if message is None:
                    message = reply.message = store.add_message(
                        reply.conversation_id, BOT, stream.text, parent_id=reply.user_message.id,
                        status="partial", model=loaded.name, settings=settings.to_dict(),
                    )
                else:
                    try:
                        store.update_message(message.id, text=stream.text, token_count=stream.stats.new_tokens)
                    except UnknownMessage:  # deleted elsewhere (another window) mid-reply: stop quietly
                        message = reply.message = None
                        reply.status = "cancelled"
                        return
                yield piece
            reply.status = "cancelled" if stream.finish_reason == "cancelled" else "complete"
        except GeneratorExit:  # the consumer stopped listening: treat as a cancel
            stream.cancel()
            reply.status = "cancelled"
            raise
        except Exception as exc:
            reply.status, reply.error = "error", f"generation failed: {exc}"
            raise
        finally:
            stream.close()  # joins the generation thread, so stream.text is final
            reply.stats = stream.stats
            if message is None and reply.status == "error":
                message = reply.message = store.add_message(
                    reply.conversation_id, BOT, stream.text, parent_id=reply.user_message.id, status="error",
                    model=loaded.name, settings=settings.to_dict(),
                )
            if message is not None:
                store.update_message(
                    message.id, text=stream.text, status=reply.status, token_count=stream.stats.new_tokens,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                )
                reply.message = store.get_message(message.id)
            elif reply.replaces is not None:  # regenerated, but nothing came: the earlier reply is back
                _show_again(store, reply.replaces)
            if reply.status in ("complete", "cancelled") and stream.text:
                # While the user reads and types, have the model read the history through this reply.
                try:
                    prefix = next_turn_prefix(loaded.format, [*history, Turn(BOT, stream.text)],
                                              budget, conditioning)
                    reply.warm_up = warm_prefix(loaded, prefix)
                except Exception:  # only a head start for the next reply; it reads everything without one
                    pass

    def read_ahead(self, conversation_id: int) -> threading.Thread | None:
        """Have the model read an opened conversation's branch in the background, as after a reply, so
        that the next reply prefills only the new message. Nothing happens until the model is loaded,
        or when the branch doesn't end with a reply. Returns the warm-up thread (join to wait)."""
        if not self.model_loaded:
            return None
        try:
            loaded = self.load()
            conversation = self.store.get_conversation(conversation_id)
            history = [Turn(m.role, m.text) for m in self.store.messages(conversation_id)
                       if m.text and m.status != "error"]
            if not history or history[-1].role != BOT:
                return None
            settings = self.settings_for(conversation).validate()
            prefix = next_turn_prefix(loaded.format, history, prompt_budget(loaded, settings),
                                      Conditioning.from_dict(conversation.conditioning))
            return warm_prefix(loaded, prefix)
        except Exception:  # only a head start: the next reply reads everything without it
            return None

    # --- replay and export ---------------------------------------------------

    def transcript(self, conversation_id: int) -> tuple[Conversation, list[Message]]:
        """The conversation and the branch on screen."""
        return self.store.get_conversation(conversation_id), self.store.messages(conversation_id)

    def export(self, conversation_id: int, fmt: str = "md") -> str:
        """Markdown: the branch on screen. JSON: every message (see core/export.py)."""
        conversation, messages = self.transcript(conversation_id)
        if fmt == "json":
            return export_json(conversation, messages, self.store.tree(conversation_id))
        if fmt in ("md", "markdown"):
            return export_markdown(conversation, messages)
        raise EngineError(f"unknown export format {fmt!r}: use md or json")

    def import_json(self, text: str) -> Conversation:
        """A conversation from what `export(..., "json")` wrote, as a new one; EngineError and nothing
        written for a file that is not such an export."""
        try:
            return import_json(self.store, text)
        except TranscriptError as exc:
            raise EngineError(str(exc)) from None


def _show_again(store: Store, message_id: int) -> None:
    try:
        store.show(message_id)
    except UnknownMessage:  # deleted meanwhile (the conversation, elsewhere)
        pass
