"""The web page's sidebar: who you talk to (film, character, you) and the model switch."""

from __future__ import annotations

from test_web import chat_texts, db_path, open_page, say, sidebar_labels, store  # noqa: F401 (fixtures)

from moviechat_tui.core.dialogue import Conditioning
from web import resources
from web.markup import text_to_markdown

CASABLANCA = ("drama", "romance", "war")


def persona_of(store, conversation_id) -> Conditioning:
    return Conditioning.from_dict(store.get_conversation(conversation_id).conditioning)


def choose(selectbox, value):
    """Pick `value`, or type it as the browser does when it is not an option (accept_new_options)."""
    if value not in selectbox.options:
        selectbox.options.append(value)  # AppTest only sends options; the browser sends the typed text
    return selectbox.set_value(value)


def pick(at, cid="new", film=None, character=None, partner=None):
    if film is not None:
        choose(at.selectbox(key=f"persona:film:{cid}"), film).run()
    if character is not None:
        choose(at.selectbox(key=f"persona:character:{cid}"), character).run()
    if partner is not None:
        at.text_input(key=f"persona:partner:{cid}").set_value(partner).run()
    assert not at.exception, at.exception
    return at


def test_a_persona_picked_before_the_first_message_starts_the_conversation(db_path, store):
    at = pick(open_page(), film="Casablanca (1942)")
    assert at.selectbox(key="persona:character:new").options[:3] == ["Rick", "Ilsa", "Laszlo"]
    assert at.multiselect(key="genres:new").value == list(CASABLANCA)  # the film's genres
    pick(at, character="Rick", partner="ilsa")
    assert any("Rick \\(to Ilsa\\)" in m.value for m in at.markdown)  # shown before anything is sent
    say(at, "Play it, Sam.")
    [conversation] = store.list_conversations()
    assert persona_of(store, conversation.id) == Conditioning("Rick", "Ilsa", "Casablanca", 1942, CASABLANCA)
    assert sidebar_labels(at) == [text_to_markdown("Play it, Sam.") + " :gray[· Rick]"]
    header = [m.value for m in at.main.markdown]
    assert any(text_to_markdown("Rick (to Ilsa) · Casablanca (1942) · drama, romance, war") in v for v in header)


def test_changing_the_persona_of_an_open_conversation(db_path, store):
    at = say(open_page(), "Hello.")
    [conversation] = store.list_conversations()
    cid = conversation.id
    pick(at, cid, film="Casablanca (1942)", character="Ilsa")
    assert persona_of(store, cid) == Conditioning("Ilsa", "", "Casablanca", 1942, CASABLANCA)
    at.multiselect(key=f"genres:{cid}").set_value(["comedy"]).run()
    pick(at, cid, partner="Rick")  # the user's own genres stay
    assert persona_of(store, cid) == Conditioning("Ilsa", "Rick", "Casablanca", 1942, ("comedy",))
    pick(at, cid, film="10 Things I Hate About You (1999)")  # a new film: its genres, no character of the old
    assert persona_of(store, cid) == Conditioning("", "Rick", "10 Things I Hate About You", 1999,
                                                  ("comedy", "romance"))
    assert at.selectbox(key=f"persona:character:{cid}").value is None
    say(at, "Who are you now?")  # the next reply is made with it; the page goes on
    assert len(store.messages(cid)) == 4
    next(b for b in at.sidebar.button if b.label == "No persona").click().run()
    assert persona_of(store, cid) == Conditioning(genres=("comedy", "romance"))


def test_names_that_are_not_in_the_cast_can_be_typed(db_path, store):
    at = pick(open_page(), film="My Own Film", character="Zorg", partner="Me")
    say(at, "Hi.")
    [conversation] = store.list_conversations()
    assert persona_of(store, conversation.id) == Conditioning("Zorg", "Me", "My Own Film")


def test_the_model_switches_in_the_background(db_path, store, tiny_gpt2_dir, tiny_chatml_dir, monkeypatch):
    at = say(open_page(), "With the first model.")
    engine = resources.shared_engine(resources.page_config([]))[0]
    choose(at.selectbox(key=f"model:{tiny_gpt2_dir}"), str(tiny_chatml_dir)).run()  # a typed spec
    switch = engine.model_switch
    assert switch.spec == str(tiny_chatml_dir) and switch.previous == str(tiny_gpt2_dir)
    assert switch.wait(120) and switch.state == "ready", switch.error
    at.run()
    assert not at.exception and at.selectbox(key=f"model:{tiny_chatml_dir}").value == str(tiny_chatml_dir)
    assert any(text_to_markdown(f"model: {tiny_chatml_dir}") in c.value for c in at.sidebar.caption)
    say(at, "With the second.")
    [conversation] = store.list_conversations()
    models = [m.model for m in store.messages(conversation.id) if m.role == "bot"]
    assert models[0].startswith(str(tiny_gpt2_dir)) and models[-1].startswith(str(tiny_chatml_dir))


def test_a_model_that_fails_to_load_leaves_the_current_one(db_path, store, tiny_gpt2_dir, tmp_path):
    at = open_page()
    choose(at.selectbox(key=f"model:{tiny_gpt2_dir}"), str(tmp_path / "nothing-here")).run()
    engine = resources.shared_engine(resources.page_config([]))[0]
    assert engine.model_switch.wait(60)
    at.run()
    [error] = at.sidebar.error
    assert "nothing-here did not load" in error.value.replace("\\", "") and "Still answering with" in error.value
    say(at, "Still there?")
    [conversation] = store.list_conversations()
    assert store.messages(conversation.id)[-1].model.startswith(str(tiny_gpt2_dir))
