"""The TUI's pickers on their own (a host app opens one and keeps what it returns): who you talk to,
and the model to switch to."""

import asyncio

import pytest
from textual.app import App

from moviechat_tui.core.dialogue import Conditioning
from moviechat_tui.tui.model_picker import ModelScreen
from moviechat_tui.tui.persona_picker import PersonaScreen

CASABLANCA = ("drama", "romance", "war")


class Host(App):
    def __init__(self, screen) -> None:
        super().__init__()
        self.picker, self.results = screen, []

    def on_mount(self) -> None:
        self.push_screen(self.picker, self.results.append)


def run(current, *steps) -> list:
    """Open the persona picker on `current` (or the given screen), then press keys (tuples) or run
    `step(app, pilot)`s; what it returned."""

    async def drive():
        app = Host(PersonaScreen(current, "for the test") if isinstance(current, Conditioning) else current)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            for step in steps:
                if isinstance(step, tuple):
                    await pilot.press(*step)
                else:
                    await step(app, pilot)
                await pilot.pause()
        return app.results

    return asyncio.run(drive())


def options(app) -> list[str]:
    listing = app.screen.query_one("#persona-options")
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


def test_search_a_film_then_pick_its_character_and_who_you_are():
    seen = {}

    async def look(app, pilot):
        seen["films"] = options(app)[:2]

    async def look_again(app, pilot):
        seen["characters"] = options(app)[:3]

    results = run(Conditioning(), tuple("casabl"), look, ("enter",), look_again, tuple("ri"), ("enter",),
                        tuple("ilsa"), ("enter",))
    assert seen["films"][0].startswith("Casablanca (1942)")
    assert seen["characters"] == ["← all films", "Rick", "Ilsa"]
    assert results == [Conditioning("Rick", "Ilsa", "Casablanca", 1942, CASABLANCA)]


def test_a_character_found_by_name_brings_its_film():
    seen = {}

    async def look(app, pilot):
        seen["hits"] = options(app)

    results = run(Conditioning(), tuple("bianca"), look, ("down",), ("enter",), ("ctrl+s",))
    assert seen["hits"][0] == "Bianca  10 Things I Hate About You (1999)" and len(seen["hits"]) == 4
    assert results == [Conditioning("Bianca", "", "10 Things I Hate About You", 1999, ("comedy", "romance"))]


def test_typed_names_for_a_film_not_in_the_cast_keep_the_genres():
    async def type_names(app, pilot):
        app.screen.query_one("#persona-character").value = "Zorg"
        app.screen.query_one("#persona-partner").value = "Korben"
        app.screen.query_one("#persona-film").value = "Moonbase Zeta"

    results = run(Conditioning(genres=("sci-fi",)), type_names, ("ctrl+s",))
    assert results == [Conditioning("Zorg", "Korben", "Moonbase Zeta", None, ("sci-fi",))]


def test_the_current_persona_is_shown_and_kept_with_its_own_genres():
    current = Conditioning("Rick", "Ilsa", "Casablanca", 1942, ("comedy",))

    async def check(app, pilot):
        assert app.screen.query_one("#persona-film").value == "Casablanca (1942)"
        assert options(app)[1] == "Rick"  # the film's characters are listed

    results = run(current, check, ("ctrl+s",))
    assert results == [current]  # the user's own genres stay while the film is the same


@pytest.mark.parametrize("button,expected", [("#clear", Conditioning(genres=("comedy",))), ("#cancel", None)])
def test_no_persona_and_cancel(button, expected):
    async def press(app, pilot):
        await pilot.click(button)

    results = run(Conditioning("Rick", "", "Casablanca", 1942, ("comedy",)), press)
    assert results == [expected]


def test_the_model_picker_lists_the_specs_and_takes_a_typed_one(tmp_path):
    seen = {}

    async def look(app, pilot):
        await app.workers.wait_for_complete()
        await pilot.pause()
        listing = app.screen.query_one("#model-options")
        seen["specs"] = [listing.get_option_at_index(i).id for i in range(listing.option_count)]
        seen["highlighted"] = listing.highlighted

    assert run(ModelScreen("smollm2-135m"), look, ("down",), ("enter",)) == ["gpt2"]
    assert seen["specs"][:3] == ["default", "smollm2-135m", "gpt2"] and seen["highlighted"] == 1

    async def type_spec(app, pilot):
        app.screen.query_one("#model-typed").focus()

    assert run(ModelScreen("default"), type_spec, tuple(str(tmp_path)), ("enter",)) == [str(tmp_path)]
    assert run(ModelScreen("default"), ("escape",)) == [None]
