"""The engine's alternatives: regenerate and edit keep every version, the model sees the branch on
screen, moving between versions, forking, rating."""

from __future__ import annotations

import pytest

from moviechat_tui.core import engine as engine_module
from moviechat_tui.core import prompting
from moviechat_tui.core.engine import ChatEngine, EngineError
from moviechat_tui.core.generation import GenerationSettings
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.store import Store

FAST = GenerationSettings(temperature=0, max_new_tokens=6, repetition_penalty=1.0, no_repeat_ngram_size=0)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


@pytest.fixture
def engine(tmp_path, tiny_loaded):
    store = Store(tmp_path / "chat.db")
    yield ChatEngine(store, "tiny", FAST, loader=lambda spec: tiny_loaded)
    store.close()


@pytest.fixture
def histories(monkeypatch):
    """The history (as (role, text) pairs) of every prompt the engine builds."""
    seen = []
    real = prompting.fit_prompt

    def spy(fmt, history, budget, conditioning):
        seen.append([(turn.role, turn.text) for turn in history])
        return real(fmt, history, budget, conditioning)

    monkeypatch.setattr(prompting, "fit_prompt", spy)
    return seen


def talk(engine, *lines):
    conversation = engine.new_conversation()
    for line in lines:
        engine.send(conversation.id, line).consume()
    return conversation


def shown(engine, conversation):
    return [(m.role, m.text) for m in engine.messages(conversation.id)]


def test_editing_an_earlier_message_starts_a_branch_and_the_model_sees_only_it(engine, histories):
    c = talk(engine, "My name is Ilsa.", "Where were we?", "Paris.")
    earlier = engine.messages(c.id)[2]  # "Where were we?"
    reply = engine.edit(c.id, earlier.id, "Where are we?")
    reply.consume()
    assert [text for _, text in shown(engine, c)] == ["My name is Ilsa.", engine.messages(c.id)[1].text,
                                                      "Where are we?", reply.text]
    assert histories[-1][-1] == ("user", "Where are we?") and len(histories[-1]) == 3
    assert all(text != "Paris." for _, text in histories[-1])
    # the old branch is one step away, with everything that followed it
    edited = engine.messages(c.id)[2]
    assert (edited.alternative, edited.alternatives) == (2, 2)
    back = engine.show_alternative(c.id, edited.id, -1)
    assert back.id == earlier.id
    assert [text for _, text in shown(engine, c)][2:5] == ["Where were we?", shown(engine, c)[3][1], "Paris."]
    assert engine.show_alternative(c.id, earlier.id, -1).id == earlier.id  # the first version stays first
    engine.send(c.id, "Go on.").consume()  # continues the branch on screen
    assert histories[-1][-1] == ("user", "Go on.") and ("user", "Paris.") in histories[-1]


def test_regenerating_an_earlier_reply_keeps_the_later_turns_on_their_branch(engine, histories):
    c = talk(engine, "One.", "Two.")
    first_reply = engine.messages(c.id)[1]
    engine.regenerate(c.id, FAST.replace(temperature=1.0, seed=1), message_id=first_reply.id).consume()
    assert histories[-1] == [("user", "One.")]
    assert [m.text for m in engine.messages(c.id)][:1] == ["One."] and len(engine.messages(c.id)) == 2
    engine.show_alternative(c.id, engine.messages(c.id)[1].id, -1)
    assert [m.text for m in engine.messages(c.id)][2] == "Two."


def test_a_regenerate_that_writes_nothing_shows_the_earlier_reply_again(engine, tmp_path):
    c = talk(engine, "Hello.")
    before = engine.messages(c.id)
    reply = engine.regenerate(c.id)
    assert [m.text for m in engine.messages(c.id)] == ["Hello."]  # while it is being written
    reply.cancel()
    reply.consume()
    assert reply.message is None and engine.messages(c.id) == before

    def broken(spec):
        raise ModelLoadError("no model")

    failing = ChatEngine(engine.store, "nowhere", FAST, loader=broken)
    with pytest.raises(ModelLoadError):
        failing.regenerate(c.id).consume()
    assert engine.messages(c.id) == before


def test_fork_copies_the_branch_up_to_a_message_into_a_new_conversation(engine):
    persona = engine_module.Conditioning(character="Rick", movie="Casablanca", genres=("drama",))
    c = engine.new_conversation(persona=persona)
    engine.send(c.id, "Hi.").consume()
    engine.send(c.id, "Bye.").consume()
    reply = engine.messages(c.id)[1]
    engine.rate(reply.id, "up")
    forked = engine.fork(c.id, reply.id)
    assert forked.id != c.id and forked.title == "Hi. (fork)"
    assert (forked.conditioning, forked.settings, forked.model_spec) == (
        engine.get_conversation(c.id).conditioning, engine.get_conversation(c.id).settings, "tiny")
    copies = engine.messages(forked.id)
    assert [(m.role, m.text, m.created_at) for m in copies] == [
        (m.role, m.text, m.created_at) for m in engine.messages(c.id)[:2]]
    assert copies[1].rating is None  # a rating counts once, on the original
    engine.send(forked.id, "Another way.").consume()
    assert len(engine.messages(c.id)) == 4 and len(engine.messages(forked.id)) == 4


def test_rating_replies(engine):
    c = talk(engine, "Hi.")
    user, bot = engine.messages(c.id)
    assert engine.rate(bot.id, "down").rating == "down"
    assert engine.rate(bot.id, out_of_character=True).rating == "down"
    assert engine.messages(c.id)[1].out_of_character is True
    assert engine.rate(bot.id, None).rating is None
    with pytest.raises(EngineError, match="only the bot"):
        engine.rate(user.id, "up")
    with pytest.raises(EngineError, match="unknown rating"):
        engine.rate(bot.id, "great")


def test_actions_on_a_message_of_another_conversation_are_refused(engine):
    one, two = talk(engine, "One."), talk(engine, "Two.")
    other = engine.messages(two.id)[0]
    for action in (lambda: engine.edit(one.id, other.id, "x"), lambda: engine.fork(one.id, other.id),
                   lambda: engine.regenerate(one.id, message_id=other.id),
                   lambda: engine.show_alternative(one.id, other.id, 1)):
        with pytest.raises(EngineError, match="not in conversation"):
            action()
    with pytest.raises(EngineError, match="only your own"):
        engine.edit(one.id, engine.messages(one.id)[1].id, "x")
