"""Pick the model to switch to: a spec `moviechat-tui models` lists, or a typed one.

    ModelScreen(current)  ->  dismisses with the spec (None: cancelled)

The switch itself is the engine's (ChatEngine.switch_model): it loads in the background while the
current model keeps answering.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..core.specs import SpecInfo, describe_specs
from .format import literal


def spec_label(info: SpecInfo, current: str) -> Text:
    label = literal(info.spec, "bold" if info.spec == current else "")
    if info.spec == current:
        label.append("  (in use)", style="italic")
    label.append_text(literal(f"  {info.note or info.resolves_to}", "dim" if info.available else "red"))
    return label


class ModelScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    #model-dialog { width: 90; height: auto; max-height: 90%; }
    #model-options { height: auto; max-height: 12; margin: 1 0; }
    #model-typed { background: $boost; }
    """
    AUTO_FOCUS = "#model-options"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__(classes="dialog-screen")
        self.current = current

    def compose(self):
        with Vertical(classes="dialog", id="model-dialog"):
            yield Label(Text.assemble(("Switch model\n", "bold"), ("It loads in the background; ", "dim"),
                                      literal(self.current, "dim"), (" answers until it is ready.", "dim")))
            yield OptionList(Option(Text("looking for models…", style="italic"), disabled=True), id="model-options")
            yield Input(id="model-typed", placeholder="or type a spec: a model directory, a trainer run, a hub id")
            yield Static(Text("enter switches · esc cancels", style="dim"))
        yield Footer()

    def on_mount(self) -> None:
        self._list_specs()

    @work(thread=True, exclusive=True)
    def _list_specs(self) -> None:
        infos = describe_specs()  # looks at the disk and the Hugging Face cache: not on the UI thread
        self.app.call_from_thread(self._show, infos)

    def _show(self, infos: list[SpecInfo]) -> None:
        try:
            options = self.query_one("#model-options", OptionList)
        except NoMatches:  # picked (a typed spec) or cancelled before the list came
            return
        options.clear_options()
        options.add_options(Option(spec_label(info, self.current), id=info.spec) for info in infos)
        specs = [info.spec for info in infos]
        options.highlighted = specs.index(self.current) if self.current in specs else 0

    @on(OptionList.OptionSelected, "#model-options")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Input.Submitted, "#model-typed")
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())
