"""Pick who you talk to: a film of the shipped cast (title and year), then one of its characters;
or type the names of the character, of who you are, and of the film.

    PersonaScreen(current, scope)  ->  dismisses with a Conditioning (None: cancelled)

Typing in the search box filters the films (and names characters of any film); enter takes the
highlighted line. A film of the cast brings its year and genres; a typed film keeps the genres.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..core.cast import Cast, CastError, Character, Movie, fold, load_cast
from ..core.dialogue import Conditioning
from .format import literal

MAX_NAME_HITS = 200  # characters of any film listed for a search (the films all are)
ALL_FILMS = "all-films"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class PersonaScreen(ModalScreen[Conditioning | None]):
    DEFAULT_CSS = """
    #persona-dialog { width: 80; height: 90%; max-height: 40; }
    #persona-options { height: 1fr; min-height: 5; margin: 1 0 0 0; }
    #persona-where { color: $text-muted; height: 1; }
    #persona-fields { grid-size: 2; grid-columns: 12 1fr; grid-rows: 1; grid-gutter: 0 1; height: auto;
                      margin: 1 0 0 0; }
    #persona-fields Input { background: $boost; }
    #persona-fields Input:focus { background: $primary 30%; }
    """
    AUTO_FOCUS = "#persona-search"
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "apply", "Apply", priority=True),
        Binding("down", "focus_options", "List", show=False),
    ]

    def __init__(self, current: Conditioning, scope: str, cast: Cast | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.current, self.scope = current, scope
        try:
            self.cast: Cast | None = cast or load_cast()
        except CastError as exc:  # a broken install: typed names still work
            self.cast, self.cast_error = None, str(exc)
        else:
            self.cast_error = ""
        self.film: Movie | None = self._cast_film(current.film) or self._cast_film(current.movie)

    def compose(self):
        with Vertical(classes="dialog", id="persona-dialog"):
            yield Label(Text.assemble(("Who you talk to ", "bold"), (self.scope, "dim")))
            films = len(self.cast.movies) if self.cast else 0
            yield Input(id="persona-search", placeholder=f"search {films} films and their characters")
            yield Static(id="persona-where")
            yield OptionList(id="persona-options")
            with Grid(id="persona-fields"):
                yield Label("Character")
                yield Input(self.current.character, id="persona-character", compact=True,
                            placeholder="who the bot plays")
                yield Label("You are")
                yield Input(self.current.partner, id="persona-partner", compact=True,
                            placeholder="yourself, or one of the film's characters")
                yield Label("Film")
                yield Input(self.current.film, id="persona-film", compact=True, placeholder="any film")
            yield Static(literal(self.cast_error), id="persona-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("No persona", id="clear", tooltip="the plain movie bot (the genres stay)")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self._list("")

    # --- the list: films, or the characters of one film --------------------------------------------

    def _cast_film(self, text: str) -> Movie | None:
        if not self.cast or not text.strip():
            return None
        wanted = fold(text)
        return next((m for m in self.cast.movies if wanted in (fold(m.label), fold(m.title))), None)

    def _list(self, query: str) -> None:
        options = self.query_one("#persona-options", OptionList)
        where = self.query_one("#persona-where", Static)
        options.clear_options()
        if self.cast is None:
            return
        if self.film is not None:
            characters = self.cast.find_characters(query, self.film)
            options.add_option(Option(Text("← all films", style="italic"), id=ALL_FILMS))
            options.add_options(self._character_option(m, c, with_film=False) for m, c in characters)
            where.update(Text.assemble(f"{_count(len(characters), 'character')} of ", literal(self.film.label, "bold"),
                                       " · enter picks one"))
        else:
            films = self.cast.find_movies(query)
            names = self.cast.find_characters(query)[:MAX_NAME_HITS] if query.strip() else []
            options.add_options(self._film_option(m) for m in films)
            options.add_options(self._character_option(m, c, with_film=True) for m, c in names)
            where.update(_count(len(films), "film") + (f", {_count(len(names), 'character')}" if names else "")
                         + (f" matching {query.strip()!r}" if query.strip() else "") + " · enter picks one")
        options.highlighted = 1 if self.film is not None and options.option_count > 1 else (
            0 if options.option_count else None)

    @staticmethod
    def _film_option(movie: Movie) -> Option:
        label = Text.assemble(literal(movie.label, "bold"), (f"  {', '.join(movie.genres)}", "dim"))
        return Option(label, id=f"film:{movie.id}")

    @staticmethod
    def _character_option(movie: Movie, character: Character, with_film: bool) -> Option:
        label = literal(character.name)
        if with_film:
            label.append_text(literal(f"  {movie.label}", "dim"))
        return Option(label, id=f"character:{movie.id}:{character.id}")

    @on(Input.Changed, "#persona-search")
    def _search(self, event: Input.Changed) -> None:
        self._list(event.value)

    @on(Input.Submitted, "#persona-search")
    def _take_highlighted(self) -> None:
        options = self.query_one("#persona-options", OptionList)
        if options.highlighted is not None:
            self._choose(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#persona-options")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def _choose(self, option_id: str | None) -> None:
        search = self.query_one("#persona-search", Input)
        if option_id == ALL_FILMS:
            self.film = None
        elif option_id and option_id.startswith("film:"):
            self.film = self._movie(option_id.split(":")[1])
            self.query_one("#persona-film", Input).value = self.film.label
        elif option_id and option_id.startswith("character:"):
            _, movie_id, character_id = option_id.split(":")
            self.film = self._movie(movie_id)
            name = next(c.name for c in self.film.characters if c.id == character_id)
            self.query_one("#persona-film", Input).value = self.film.label
            self.query_one("#persona-character", Input).value = name
            self.query_one("#persona-partner", Input).focus()
        with search.prevent(Input.Changed):
            search.value = ""
        self._list("")
        if self.film is not None and self.query_one("#persona-character", Input).value == "":
            search.focus()  # now typing searches the film's characters

    def _movie(self, movie_id: str) -> Movie:
        return next(m for m in self.cast.movies if m.id == movie_id)

    def action_focus_options(self) -> None:
        if self.focused is self.query_one("#persona-search", Input):
            self.query_one("#persona-options", OptionList).focus()

    # --- the result --------------------------------------------------------------------------------

    def chosen(self) -> Conditioning:
        """The persona the fields say; a film of the cast is spelled (and dated) as in the cast."""
        value = {name: self.query_one(f"#persona-{name}", Input).value for name in ("character", "partner", "film")}
        film = self._cast_film(value["film"])
        if film is None:  # a typed film (or none): no year; the genres stay
            year = self.current.year if fold(value["film"]) == fold(self.current.film) else None  # unchanged
            movie = self.current.movie if year else value["film"]
            return Conditioning(value["character"], value["partner"], movie, year, self.current.genres)
        def spelled(name: str) -> str:
            return next((c.name for c in film.characters if fold(c.name) == fold(name)), name)

        character, partner = spelled(value["character"]), spelled(value["partner"])
        same_film = fold(film.title) == fold(self.current.movie) and film.year == self.current.year
        return Conditioning(character, partner, film.title, film.year, self.current.genres if same_film else film.genres)

    @on(Input.Submitted, "#persona-character, #persona-partner, #persona-film")
    def _field_submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        self.dismiss(self.chosen())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.action_apply()
        elif event.button.id == "clear":
            self.dismiss(Conditioning(genres=self.current.genres))
        else:
            self.dismiss(None)
