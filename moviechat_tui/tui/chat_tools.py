"""The chat screen's tools besides chatting: who you talk to, switching the model, copying text.

`ChatTools` is mixed into ChatScreen (it uses the screen's engine, chat, conversation, status line);
its key bindings and palette entries are listed with the screen's.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message as TextualMessage

from ..core.dialogue import BOT
from ..core.engine import EngineError
from ..core.store import StoreError
from ..core.model_holder import FAILED, READY, ModelSwitch
from .clipboard import copy_text, plain_transcript
from .model_picker import ModelScreen
from .persona_picker import PersonaScreen

# (palette title, help, action), added to the screen's COMMANDS.
TOOL_COMMANDS = [
    ("Who you talk to", "Pick a film and one of its characters, or type names (f2)", "persona"),
    ("Switch model", "Load another model; the current one answers until it is ready", "switch_model"),
    ("Copy last reply", "Copy the last reply to the clipboard (f3)", "copy_reply"),
    ("Copy conversation", "Copy this whole conversation to the clipboard as text", "copy_conversation"),
]


@dataclass
class ModelSwitched(TextualMessage):
    switch: ModelSwitch


class ChatTools:
    # --- who you talk to --------------------------------------------------------------------------

    def action_persona(self) -> None:
        scope = (f"for conversation #{self.conversation.id}, from its next reply" if self.conversation
                 else "for the next new conversation")
        self.app.push_screen(PersonaScreen(self.chat.persona, scope), self._persona_chosen)

    def _persona_chosen(self, persona) -> None:
        if persona is not None:
            self.chat.apply_persona(persona)  # saved on a worker; a failure is notified there
            self.notify(f"talking with {persona.describe()}" if persona.has_persona
                        else "no persona: the plain movie bot", timeout=4, markup=False)
        self.focus_input()

    # --- the model ----------------------------------------------------------------------------------

    def action_switch_model(self) -> None:
        self.app.push_screen(ModelScreen(self.engine.model_spec), self._model_chosen)

    def _model_chosen(self, spec: str | None) -> None:
        if spec:
            try:
                switch = self.engine.switch_model(spec, on_done=lambda s: self.post_message(ModelSwitched(s)))
            except EngineError as exc:
                self.show_error(exc)
            else:
                self.notify(f"loading {switch.spec}… {switch.previous} answers until it is ready", timeout=5,
                            markup=False)
            self.update_status()
        self.focus_input()

    def on_model_switched(self, message: ModelSwitched) -> None:
        switch = message.switch
        if switch is not self.engine.model_switch:
            return  # superseded by a later switch, which reports for itself
        if switch.state == READY:
            self.notify(f"now answering with {switch.spec}", timeout=5, markup=False)
            self.chat.chat_log.query(".load-error").remove()  # a first model that failed: this one works
            if self.conversation is not None:  # the new model hasn't read this conversation yet
                self.engine.read_ahead(self.conversation.id)
        elif switch.state == FAILED:
            self.notify(f"{switch.error}\nStill answering with {self.engine.model_spec}.",
                        title=f"{switch.spec} did not load", severity="error", timeout=12, markup=False)
        self.update_status()

    def switch_note(self) -> str:
        """For the status line, after the model that answers, while a switch loads."""
        switch = self.engine.model_switch
        return f" (→ {switch.spec}, loading…)" if switch is not None and not switch.done else ""

    # --- copying ------------------------------------------------------------------------------------

    def action_copy_reply(self) -> None:
        last = next((v for v in reversed(self.chat.chat_log.views()) if v.role == BOT and v.text), None)
        if last is None:
            self.notify("no reply to copy yet", severity="warning")
            return
        copy_text(self.app, last.text, "the last reply")

    def action_copy_conversation(self) -> None:
        if self.conversation is None:
            self.notify("nothing to copy yet: this conversation has no messages", severity="warning")
            return
        try:
            conversation, messages = self.engine.transcript(self.conversation.id)
        except StoreError as exc:
            self.show_error(exc)
            return
        copy_text(self.app, plain_transcript(conversation, messages), f"conversation #{conversation.id}")
