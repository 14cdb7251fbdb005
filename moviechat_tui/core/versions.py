"""The versions of a turn: regenerate a reply or edit a message (the earlier version stays as a
sibling), move between versions, fork a conversation at a message, rate replies.

VersionActions is a mixin of ChatEngine: it uses the engine's store and its `_reply` (the engine.Reply
that streams the answer to a user message, which regenerate and edit return).
"""

from __future__ import annotations

from .dialogue import USER
from .importing import fork
from .records import Conversation, Message
from .settings import GenerationSettings
from .store import UNCHANGED
from .user_input import EngineError, checked_user_text, default_title


class VersionActions:
    def regenerate(self, conversation_id: int, settings: GenerationSettings | None = None,
                   message_id: int | None = None):
        """Answer a user message again; the earlier replies stay as alternatives. Which one: the user
        message `message_id` or the one a reply `message_id` answers, else the last user message on screen."""
        branch = self.store.messages(conversation_id)
        if message_id is None:
            target = next((m for m in reversed(branch) if m.role == USER), None)
            if target is None:
                raise EngineError("nothing to regenerate: the conversation has no user message yet")
        else:
            target = self._message_in(conversation_id, message_id)
            if target.role != USER:
                target = self.store.get_message(target.parent_id) if target.parent_id else target
            if target.role != USER:
                raise EngineError("that reply answers no message of yours: nothing to regenerate")
        shown_after = next((m.id for m in branch if m.parent_id == target.id), None)
        self.store.end_branch_at(target.id)  # the new reply will follow it; until then nothing does
        reply = self._reply(conversation_id, target, settings)
        reply.replaces = shown_after
        return reply

    def edit(self, conversation_id: int, message_id: int, text: str,
             settings: GenerationSettings | None = None):
        """A new version of one of the user's messages, answered; the old one and what followed it stay
        as an alternative branch."""
        text, notices = checked_user_text(text)
        original = self._message_in(conversation_id, message_id)
        if original.role != USER:
            raise EngineError("only your own messages can be edited; regenerate a reply instead")
        user_message = self.store.add_message(conversation_id, USER, text, parent_id=original.parent_id)
        reply = self._reply(conversation_id, user_message, settings)
        reply.notices.extend(notices)
        return reply

    def edit_last_user_message(
        self, conversation_id: int, text: str, settings: GenerationSettings | None = None
    ):
        """Edit the last user message on screen (see `edit`)."""
        last_user = next((m for m in reversed(self.store.messages(conversation_id)) if m.role == USER), None)
        if last_user is None:
            raise EngineError("no user message to edit")
        return self.edit(conversation_id, last_user.id, text, settings)

    def show_alternative(self, conversation_id: int, message_id: int, step: int) -> Message:
        """Show the version `step` places after (negative: before) this message among its siblings, with
        the branch that was last shown below it; returns the message now shown (the same one at either end)."""
        self._message_in(conversation_id, message_id)
        siblings = self.store.siblings(message_id)
        index = next(i for i, m in enumerate(siblings) if m.id == message_id)
        chosen = siblings[max(0, min(len(siblings) - 1, index + step))]
        self.store.show(chosen.id)
        return chosen

    def fork(self, conversation_id: int, message_id: int) -> Conversation:
        """A new conversation that starts as a copy of the branch up to this message."""
        conversation = self.store.get_conversation(conversation_id)
        branch = self.store.branch_to(self._message_in(conversation_id, message_id).id)
        title = default_title(f"{conversation.title or branch[0].text} (fork)")
        return fork(self.store, conversation, branch, title)

    def rate(self, message_id: int, rating: str | None = UNCHANGED, out_of_character: bool | None = UNCHANGED) -> Message:
        """Rate a reply: `rating` "up", "down" or None (no rating); `out_of_character` True or False."""
        message = self.store.get_message(message_id)
        if message.role == USER:
            raise EngineError("only the bot's replies can be rated")
        if rating not in (UNCHANGED, None, "up", "down"):
            raise EngineError(f"unknown rating {rating!r}: use up, down or none")
        return self.store.rate_message(message_id, rating=rating, out_of_character=out_of_character)

    def _message_in(self, conversation_id: int, message_id: int) -> Message:
        message = self.store.get_message(message_id)
        if message.conversation_id != conversation_id:
            raise EngineError(f"message {message_id} is not in conversation #{conversation_id}")
        return message
