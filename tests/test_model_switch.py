"""ChatEngine.switch_model: the new model loads in the background while the current one answers."""

import threading

import pytest

from moviechat_tui.core.engine import ChatEngine, EngineError
from moviechat_tui.core.settings import GenerationSettings
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.store import Store

FAST = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, seed=0, max_new_tokens=4)


@pytest.fixture(scope="module")
def models(tiny_gpt2_dir, tiny_chatml_dir):
    return {"plain": load_model(str(tiny_gpt2_dir)), "chatml": load_model(str(tiny_chatml_dir))}


@pytest.fixture
def gate():
    return threading.Event()


@pytest.fixture
def engine(tmp_path, models, gate):
    def loader(spec):
        if spec == "broken":
            raise ModelLoadError("no model directory 'broken' (try `moviechat-tui models`)")
        if spec != "plain":
            assert gate.wait(30), "the test never opened the gate"
        return models[spec]

    store = Store(tmp_path / "chat.db")
    engine = ChatEngine(store, "plain", FAST, loader=loader)
    engine.load()
    yield engine
    store.close()


def test_the_current_model_answers_until_the_new_one_is_ready(engine, models, gate):
    conversation = engine.new_conversation()
    done = []
    switch = engine.switch_model("chatml", on_done=done.append)
    assert switch.state == "loading" and engine.model_switch is switch
    engine.send(conversation.id, "While it loads?").consume()  # not blocked by the load
    assert engine.messages(conversation.id)[-1].model == models["plain"].name
    gate.set()
    assert switch.wait(30) and switch.state == "ready" and switch.error is None
    assert done == [switch] and engine.model_spec == "chatml"
    engine.send(conversation.id, "And now?").consume()
    assert engine.messages(conversation.id)[-1].model == models["chatml"].name
    assert engine.new_conversation().model_spec == "chatml"  # new conversations record it


def test_a_failed_switch_keeps_the_current_model(engine, models):
    switch = engine.switch_model("broken")
    assert switch.wait(30) and switch.state == "failed"
    assert switch.error == "no model directory 'broken' (try `moviechat-tui models`)"
    assert engine.model_spec == "plain" and engine.load() is models["plain"]


def test_a_later_switch_wins(engine, models, gate):
    first = engine.switch_model("chatml")
    second = engine.switch_model("plain")  # back to the current one: nothing to load
    assert second.wait(30) and second.state == "ready"
    gate.set()
    assert first.wait(30) and first.state == "failed" and "superseded" in first.error
    assert engine.model_spec == "plain" and engine.load() is models["plain"]


def test_an_empty_spec_is_refused(engine):
    with pytest.raises(EngineError, match="no model spec"):
        engine.switch_model("  ")
    assert engine.model_switch is None


def test_a_switch_rescues_a_first_model_that_failed(tmp_path, models):
    def loader(spec):
        if spec == "broken":
            raise ModelLoadError("no model directory 'broken'")
        return models[spec]

    with Store(tmp_path / "c.db") as store:
        engine = ChatEngine(store, "broken", FAST, loader=loader)
        engine.load_in_background()
        assert engine.wait_for_model(30) and engine.model_status == "failed"
        assert engine.switch_model("plain").wait(30)
        assert (engine.model_status, engine.model_error, engine.model_spec) == ("ready", None, "plain")
        conversation = engine.new_conversation()
        engine.send(conversation.id, "Working now?").consume()
        assert engine.messages(conversation.id)[-1].model == models["plain"].name
