"""Modal screens: confirm, rename, settings, help."""

from __future__ import annotations

from typing import Callable

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from ..core.engine import EngineError
from ..core.settings import DESCRIPTIONS, GenerationSettings, SettingsError
from ..core.store import StoreError
from .format import literal, parse_genres


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y/Enter confirms, n/Esc declines."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: Text, yes: str = "Delete") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.yes = question, yes

    def compose(self):
        with Vertical(classes="dialog"):
            yield Static(self.question)
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", id="no")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text; `apply` may raise EngineError/StoreError, shown inline."""

    AUTO_FOCUS = "#prompt-input"

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]  # enter saves

    def __init__(self, title: str, value: str, apply: Callable[[str], None]) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.value, self.apply = title, value, apply

    def compose(self):
        with Vertical(classes="dialog"):
            yield Label(literal(self.title_text, "bold"))
            yield Input(self.value, id="prompt-input")
            yield Static(id="prompt-error", classes="error")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.apply(event.value)
        except (EngineError, StoreError, ValueError) as exc:
            self.query_one("#prompt-error", Static).update(literal(str(exc)))
            return
        self.dismiss(event.value)


class SettingsScreen(ModalScreen[bool]):
    """Decoding settings and genre steering of the conversation; invalid values save nothing."""

    AUTO_FOCUS = "#temperature"

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "dismiss(False)", "Cancel"),
    ]

    def __init__(self, settings: GenerationSettings, genres: list[str], model: Text,
                 apply: Callable[[GenerationSettings, list[str]], None], scope: str) -> None:
        super().__init__(classes="dialog-screen")
        self.settings, self.genres, self.model, self.apply, self.scope = settings, genres, model, apply, scope

    def compose(self):
        with VerticalScroll(classes="dialog", id="settings-dialog"):
            yield Label(Text("Settings ", style="bold") + Text(self.scope, style="dim"))
            with Grid(id="settings-grid"):
                for setting in DESCRIPTIONS:
                    value = getattr(self.settings, setting.name)
                    yield Label(setting.label)
                    yield Input("" if value is None else f"{value:g}" if isinstance(value, float) else str(value),
                                id=setting.name, tooltip=setting.hint, compact=True)
                yield Label("Genres")
                yield Input(", ".join(self.genres), id="genres", placeholder="e.g. comedy, romance",
                            tooltip="steer the tone: comma-separated movie genres", compact=True)
            yield Static(self.model, id="model-spec")
            yield Static(id="settings-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(False)

    def on_input_submitted(self) -> None:
        self.action_save()

    def read(self) -> tuple[GenerationSettings, list[str]]:
        """The form's values; SettingsError (one line) for anything unusable."""
        values = {s.name: s.parse(self.query_one(f"#{s.name}", Input).value) for s in DESCRIPTIONS}
        settings = GenerationSettings(**values).validate()
        return settings, parse_genres(self.query_one("#genres", Input).value)

    def action_save(self) -> None:
        error = self.query_one("#settings-error", Static)
        try:
            settings, genres = self.read()
            self.apply(settings, genres)
        except (SettingsError, StoreError) as exc:
            error.update(literal(str(exc)))
            return
        self.dismiss(True)


class HelpScreen(ModalScreen[None]):
    """Key bindings and a short guide."""

    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def __init__(self, keys: list[tuple[str, str]], guide: str) -> None:
        super().__init__(classes="dialog-screen")
        self.keys, self.guide = keys, guide

    def compose(self):
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(key, description)
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Label(Text("moviechat — keys", style="bold"))
            yield Static(table)
            yield Static(Text(self.guide), classes="guide")
        yield Footer()
