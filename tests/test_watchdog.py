"""The generation watchdog: a backend that stops producing tokens ends the reply as an error."""

import threading
import time

import pytest

from moviechat_tui.core.dialogue import USER, Turn
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.generation import GenerationSettings, GenerationStalled, stream_reply
from moviechat_tui.core.loading import LoadedModel, load_model
from moviechat_tui.core.store import Store

SETTINGS = GenerationSettings(temperature=0, max_new_tokens=20, repetition_penalty=1.0, no_repeat_ngram_size=0)
STALL = 0.5  # seconds without a token before the watchdog ends the reply


class FakeBackend:
    """A Backend (core/backends) that says a few words, then, while `stall` is set, hangs without
    looking at `cancelled` until `release` is set."""

    name = "fake"

    def __init__(self, words=("Hello", " there", " friend"), delay=0.0):
        self.words, self.delay = words, delay
        self.stall, self.release, self.stuck = threading.Event(), threading.Event(), threading.Event()
        self.tokenizer = None  # set by the `loaded` fixture

    def warm(self, prefix_ids):
        return False

    def clear_prefixes(self):
        pass

    def generate(self, prompt_ids, settings, on_token, cancelled, end_of_turn_id):
        new = []
        for word in self.words:
            for token in self.tokenizer.encode(word):
                time.sleep(self.delay)
                on_token(token)
                new.append(token)
        if self.stall.is_set():
            self.stuck.set()
            self.release.wait(timeout=30)  # a stuck backend: deaf to cancel
            self.stuck.clear()
        on_token(end_of_turn_id)
        return [*new, end_of_turn_id]


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


@pytest.fixture
def backend():
    fake = FakeBackend()
    yield fake
    fake.release.set()  # let a stuck worker thread go


@pytest.fixture
def loaded(tiny, backend):
    backend.tokenizer = tiny.tokenizer
    return LoadedModel(model=tiny.model, tokenizer=tiny.tokenizer, format=tiny.format, spec="fake",
                       source="test", context_window=tiny.context_window, fast=backend)


def _prompt(loaded):
    return loaded.format.prompt_ids([Turn(USER, "Say something.")])


def test_a_backend_that_produces_tokens_is_left_alone(loaded):
    stream = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    assert "".join(stream) == "Hello there friend" == stream.text
    assert stream.finish_reason == "end_of_turn" and stream.error is None


def test_a_reply_cancelled_before_it_starts_ends_at_once(loaded):
    stream = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    stream.cancel()  # e.g. esc pressed right after sending
    started = time.monotonic()
    assert list(stream) == [] and stream.finish_reason == "cancelled"
    assert time.monotonic() - started < STALL


def test_a_stalled_backend_ends_the_reply_as_an_error(loaded, backend):
    backend.stall.set()
    stream = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    shown = []
    with pytest.raises(GenerationStalled, match=r"no token for \d+ s; reply stopped"):
        for piece in stream:
            shown.append(piece)
    assert backend.stuck.is_set()  # the consumer did not wait for the stuck backend
    assert stream.finish_reason == "error" and stream.text == "".join(shown).strip()
    assert stream.text.startswith("Hello there")


def test_a_reply_waiting_behind_a_stuck_one_gives_up_too(loaded, backend):
    backend.stall.set()
    first = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    with pytest.raises(GenerationStalled):
        first.text = "".join(first)
    second = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    with pytest.raises(GenerationStalled, match="stuck on another reply"):
        list(second)
    assert second.text == ""
    backend.stall.clear()
    backend.release.set()  # the backend comes back: the model works again
    third = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    assert "".join(third) == "Hello there friend"


def test_waiting_behind_a_slow_but_working_reply_is_not_a_stall(loaded, backend):
    backend.words, backend.delay = ("Slow",) * 8, STALL / 4  # tokens well within the limit, the reply not
    first = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    second = stream_reply(loaded, _prompt(loaded), SETTINGS, stall_seconds=STALL)
    results = {}
    reader = threading.Thread(target=lambda: results.setdefault("first", "".join(first)))
    reader.start()
    results["second"] = "".join(second)  # waits for the model longer than STALL
    reader.join()
    assert results == {"first": "Slow" * 8, "second": "Slow" * 8}


def test_the_engine_keeps_the_turn_and_stays_usable(tmp_path, loaded, backend):
    with Store(tmp_path / "chat.db") as store:
        engine = ChatEngine(store, "fake", SETTINGS, loader=lambda spec: loaded, stall_seconds=STALL)
        conversation = engine.new_conversation()
        backend.stall.set()
        reply = engine.send(conversation.id, "Are you there?")
        with pytest.raises(GenerationStalled):
            reply.consume()
        assert reply.status == "error" and "no token for" in reply.error
        user, bot = engine.messages(conversation.id)
        assert (user.text, user.status) == ("Are you there?", "complete")
        assert (bot.text, bot.status) == (reply.text, "error") and bot.text.startswith("Hello")
        backend.stall.clear()
        backend.release.set()
        again = engine.regenerate(conversation.id)
        assert again.consume() == "Hello there friend" and again.status == "complete"
        assert [m.status for m in engine.messages(conversation.id)] == ["complete", "complete"]


def test_the_app_shows_a_stalled_reply_as_an_error_and_goes_on(tmp_path, loaded, backend):
    import asyncio

    from moviechat_tui.tui.app import MovieChatApp
    from moviechat_tui.tui.widgets import MessageView

    async def exchange(app, pilot, text):
        app.chat_screen.chat_input.text = text
        await pilot.press("enter")
        deadline = time.monotonic() + 20
        while app.chat_screen.chat.generating or len(app.query(MessageView)) % 2 or not app.query(MessageView):
            assert time.monotonic() < deadline, "no reply"
            await pilot.pause(0.05)
        return app.query(MessageView).last()

    async def run():
        with Store(tmp_path / "chat.db") as store:
            engine = ChatEngine(store, "fake", SETTINGS, loader=lambda spec: loaded, stall_seconds=STALL)
            app = MovieChatApp(engine)
            async with app.run_test(size=(100, 30)) as pilot:
                backend.stall.set()
                stuck = await exchange(app, pilot, "Are you there?")
                assert stuck.status == "error" and stuck.text.startswith("Hello")
                deadline = time.monotonic() + 10  # app.notify posts a message: it is shown a moment later
                while not any("no token for" in n.message for n in app._notifications):
                    assert time.monotonic() < deadline, "no notice of the stall"
                    await pilot.pause(0.05)
                backend.stall.clear()
                backend.release.set()
                await pilot.pause(0.2)
                answered = await exchange(app, pilot, "Hello?")
                assert (answered.status, answered.text) == ("complete", "Hello there friend")
                [conversation] = store.list_conversations()
                assert [m.status for m in store.messages(conversation.id)] == ["complete", "error", "complete",
                                                                              "complete"]

    asyncio.run(run())
