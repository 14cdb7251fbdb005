"""The conversation engine: one class behind the TUI, the web page and the CLI."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from moviechat_tui.core import engine as engine_module
from moviechat_tui.core.engine import ChatEngine, EngineError
from moviechat_tui.core.settings import GenerationSettings
from moviechat_tui.core.loading import ModelLoadError, load_model
from moviechat_tui.core.store import Store, UnknownConversation

FAST = GenerationSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.0, no_repeat_ngram_size=0)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


@pytest.fixture
def engine(tmp_path, tiny_loaded):
    store = Store(tmp_path / "chat.db")
    yield ChatEngine(store, "tiny", FAST, loader=lambda spec: tiny_loaded)
    store.close()


def test_send_streams_and_stores_both_turns(engine):
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "Where are you going?")
    pieces = list(reply)
    assert pieces and "".join(pieces).strip() == reply.text
    user, bot = engine.messages(conversation.id)
    assert (user.role, user.text, user.status) == ("user", "Where are you going?", "complete")
    assert (bot.role, bot.text, bot.status) == ("bot", reply.text, "complete")
    assert bot.token_count == reply.stats.new_tokens > 0
    assert bot.latency_ms > 0 and bot.settings["max_new_tokens"] == 12
    # The first message names the conversation.
    assert engine.get_conversation(conversation.id).title == "Where are you going?"


def test_a_paced_engine_saves_a_reply_in_fewer_writes(tmp_path, slow_loaded, monkeypatch):
    # Each piece is one write to the database; paced, the consumer takes pieces at most every 0.3 s.
    writes = []
    update = Store.update_message
    monkeypatch.setattr(Store, "update_message", lambda self, *a, **k: (writes.append(k), update(self, *a, **k))[1])
    counts = {}
    for piece_seconds in (0.0, 0.3):
        with Store(tmp_path / f"{piece_seconds}.db") as store:
            wordy = GenerationSettings(temperature=0, max_new_tokens=16)  # the tiny model's words, spaced
            engine = ChatEngine(store, "slow", wordy, loader=lambda spec: slow_loaded, piece_seconds=piece_seconds)
            writes.clear()
            reply = engine.send(None, "Where are you going?")
            reply.consume()
            counts[piece_seconds] = len(writes)
            assert engine.messages(reply.conversation_id)[-1].text == reply.text
    assert counts[0.0] >= 6 and counts[0.3] <= counts[0.0] // 2


def test_user_message_is_committed_before_generation(engine):
    conversation = engine.new_conversation()
    engine.send(conversation.id, "Hello?")  # not iterated: nothing generated yet
    assert [m.text for m in engine.messages(conversation.id)] == ["Hello?"]


def test_cancel_keeps_what_was_shown(engine):
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "Talk to me.", FAST.replace(max_new_tokens=200))
    shown = ""
    for piece in reply:
        shown += piece
        if len(shown) > 3:
            reply.cancel()
    bot = engine.messages(conversation.id)[-1]
    assert bot.status == "cancelled" == reply.status
    assert bot.text == shown.strip()


def test_a_consumer_that_walks_away_leaves_a_cancelled_reply(engine):
    conversation = engine.new_conversation()
    iterator = iter(engine.send(conversation.id, "Hi.", FAST.replace(max_new_tokens=200)))
    first = next(iterator)
    iterator.close()
    bot = engine.messages(conversation.id)[-1]
    assert bot.status == "cancelled" and bot.text == first.strip()


def test_regenerate_shows_a_new_reply_and_keeps_the_old_one(engine):
    conversation = engine.new_conversation()
    engine.send(conversation.id, "One.").consume()
    engine.send(conversation.id, "Two.").consume()
    first = engine.messages(conversation.id)[-1]
    seeded = GenerationSettings(temperature=1.0, seed=3, max_new_tokens=10)
    again = engine.regenerate(conversation.id, seeded).consume()
    messages = engine.messages(conversation.id)
    assert [m.role for m in messages] == ["user", "bot", "user", "bot"]
    assert messages[-1].text == again and messages[2].text == "Two."
    assert (messages[-1].alternative, messages[-1].alternatives) == (2, 2)
    assert (engine.store.siblings(messages[-1].id)[0].id, first.text) == (first.id, engine.store.get_message(first.id).text)


def test_edit_last_user_message_and_resend(engine):
    conversation = engine.new_conversation()
    engine.send(conversation.id, "Hello.").consume()
    engine.send(conversation.id, "Typo here.").consume()
    engine.edit_last_user_message(conversation.id, "No typo.").consume()
    texts = [(m.role, m.text) for m in engine.messages(conversation.id)]
    assert texts[2] == ("user", "No typo.") and len(texts) == 4
    assert [m.text for m in engine.store.siblings(engine.messages(conversation.id)[2].id)] == [
        "Typo here.", "No typo."]


def test_continuing_a_saved_conversation_sends_its_history(engine, tiny_loaded, monkeypatch):
    conversation = engine.new_conversation()
    engine.send(conversation.id, "First line.").consume()
    seen = []
    real = engine_module.stream_reply
    monkeypatch.setattr(engine_module, "stream_reply", lambda loaded, ids, s, *rest: seen.append(ids) or real(loaded, ids, s, *rest))
    # A new engine (a relaunch) continues the same conversation from the database.
    again = ChatEngine(Store(engine.store.path), "tiny", FAST, loader=lambda spec: tiny_loaded)
    again.send(conversation.id, "Second line.").consume()
    prompt = tiny_loaded.tokenizer.decode(seen[0])
    assert "First line." in prompt and "Second line." in prompt
    assert len(again.messages(conversation.id)) == 4


def test_history_is_truncated_from_the_oldest_turn(engine, monkeypatch):
    from moviechat_tui.core import prompting

    monkeypatch.setattr(prompting, "MAX_CHAT_CONTEXT", 80)
    conversation = engine.new_conversation()
    for i in range(6):
        reply = engine.send(conversation.id, f"message number {i} with some padding words")
        reply.consume()
    assert any("older turn" in n for n in reply.notices)
    assert engine.messages(conversation.id)[-2].text.endswith("padding words")


def test_an_overlong_message_is_cut_with_a_notice_not_an_error(engine):
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "blah " * 2_000 + "the end?")  # ~2,000 tokens, 1,024 fit
    reply.consume()
    assert reply.status == "complete"
    assert any("only its last" in n for n in reply.notices)
    assert engine.messages(conversation.id)[0].text.endswith("the end?")  # stored in full


def test_a_message_over_the_limit_is_refused_in_one_line_and_nothing_is_stored(engine):
    conversation = engine.new_conversation()
    with pytest.raises(EngineError, match=r"^message too long: 1,000,000 characters \(at most 50,000\)"):
        engine.send(conversation.id, "x" * 1_000_000)
    assert engine.messages(conversation.id) == []
    limit = engine_module.MAX_MESSAGE_CHARS
    assert engine.send(conversation.id, "x" * limit).user_message.text == "x" * limit


def test_cleaning_a_message_says_what_it_changed(engine):
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "nul\x00here \udcff ok")
    assert reply.user_message.text == "nulhere \ufffd ok"
    assert len(reply.notices) == 2
    assert engine.send(conversation.id, "plain \ufffd text").notices == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", "\x00\x01\x02"])
def test_empty_messages_are_refused_and_nothing_is_stored(engine, text):
    conversation = engine.new_conversation()
    with pytest.raises(EngineError, match="empty message"):
        engine.send(conversation.id, text)
    assert engine.messages(conversation.id) == []


def test_control_characters_are_removed_binaryish_input_works(engine):
    conversation = engine.new_conversation()
    engine.send(conversation.id, "bell\x07 esc\x1b[31m red \udcff\ufffd ok").consume()
    assert engine.messages(conversation.id)[0].text == "bell esc[31m red \ufffd\ufffd ok"


def test_unknown_conversation(engine):
    with pytest.raises(UnknownConversation):
        engine.send(987654, "hello")


def test_a_model_that_fails_to_load_keeps_the_user_message(tmp_path):
    def broken(spec):
        raise ModelLoadError("no model directory at /nowhere")

    store = Store(tmp_path / "x.db")
    engine = ChatEngine(store, "/nowhere", FAST, loader=broken)
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "Anyone there?")
    with pytest.raises(ModelLoadError):
        reply.consume()
    assert [m.text for m in engine.messages(conversation.id)] == ["Anyone there?"]
    assert reply.status == "error"


def test_export_markdown_and_json(engine):
    conversation = engine.new_conversation(genres=["Comedy", " horror "])
    engine.send(conversation.id, "# not a heading <script>alert(1)</script>").consume()
    md = engine.export(conversation.id, "md")
    assert md.startswith("# \\# not a heading \\<script\\>")  # the title is escaped too
    assert "> \\# not a heading \\<script\\>alert(1)\\</script\\>" in md
    assert "genres: comedy, horror" in md
    data = json.loads(engine.export(conversation.id, "json"))
    assert [m["role"] for m in data["messages"]] == ["user", "bot"]
    assert data["conversation"]["conditioning"] == {"genres": ["comedy", "horror"]}
    with pytest.raises(EngineError):
        engine.export(conversation.id, "pdf")


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from moviechat_tui.core.engine import ChatEngine
    from moviechat_tui.core.settings import GenerationSettings
    from moviechat_tui.core.loading import load_model
    from moviechat_tui.core.store import Store

    engine = ChatEngine(Store(sys.argv[1]), sys.argv[2], GenerationSettings(max_new_tokens=2000, temperature=1.0))
    conversation = engine.new_conversation()
    shown = ""
    for i, piece in enumerate(engine.send(conversation.id, "Tell me a long story.")):
        shown += piece
        if i == 5:
            print(conversation.id, repr(shown), flush=True)
        if i > 5:
            sys.stdin.readline()  # wait here, mid-reply, to be killed
    """
)


def test_a_killed_process_loses_nothing_that_was_shown(tmp_path, tiny_gpt2_dir):
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db), str(tiny_gpt2_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conversation_id, shown = line.split(" ", 1)
    messages = Store(db).messages(int(conversation_id))
    assert messages[0].text == "Tell me a long story."
    assert messages[1].status == "partial"
    assert messages[1].text.startswith(eval(shown).strip())


def test_a_conversation_deleted_mid_reply_stops_quietly(engine):
    conversation = engine.new_conversation()
    reply = engine.send(conversation.id, "Hi.", FAST.replace(max_new_tokens=100))
    for i, _ in enumerate(reply):
        if i == 1:
            engine.delete(conversation.id)  # e.g. from the web page
    assert reply.status == "cancelled" and reply.message is None
    assert engine.list_conversations() == []


def test_a_persona_is_stored_and_reaches_the_prompt(tmp_path, tiny_chatml_dir):
    from moviechat_tui.core.dialogue import Conditioning

    engine = ChatEngine(Store(tmp_path / "p.db"), model_spec=str(tiny_chatml_dir))
    persona = Conditioning(character="Rick", partner="Ilsa", movie="Casablanca", year=1942, genres=("drama",))
    conversation = engine.new_conversation(persona=persona)
    assert Conditioning.from_dict(engine.get_conversation(conversation.id).conditioning) == persona
    seen = []
    import moviechat_tui.core.prompting as engine_module  # where the engine plans its prompts

    real = engine_module.fit_prompt
    engine_module.fit_prompt = lambda fmt, history, budget, conditioning: seen.append(conditioning) or real(
        fmt, history, budget, conditioning)
    try:
        list(engine.send(conversation.id, "Hello.", GenerationSettings(max_new_tokens=2, seed=0)))
    finally:
        engine_module.fit_prompt = real
    assert seen == [persona]
    # new genres keep the persona; a new persona keeps nothing of the old one
    updated = engine.update_settings(conversation.id, genres=["comedy"])
    assert Conditioning.from_dict(updated.conditioning) == Conditioning(
        character="Rick", partner="Ilsa", movie="Casablanca", year=1942, genres=("comedy",))


def test_sending_to_no_conversation_starts_one_with_its_settings_and_genres(engine):
    settings = FAST.replace(max_new_tokens=7)
    with pytest.raises(EngineError):
        engine.send(None, "   ")
    assert engine.list_conversations() == []  # nothing saved for a message that can't be sent
    reply = engine.send(None, "Who goes there?", settings, genres=["horror"])
    reply.consume()
    conversation = engine.get_conversation(reply.conversation_id)
    assert conversation.title == "Who goes there?" and conversation.conditioning["genres"] == ["horror"]
    assert engine.settings_for(conversation).max_new_tokens == 7
    assert reply.message.settings["max_new_tokens"] <= 7


def test_the_model_status_goes_waiting_loading_ready(tmp_path, tiny_loaded):
    import threading

    release = threading.Event()

    def slow_loader(spec):
        release.wait(10)
        return tiny_loaded

    with Store(tmp_path / "chat.db") as store:
        engine = ChatEngine(store, "tiny", FAST, loader=slow_loader)
        assert engine.model_status == "waiting" and not engine.model_loaded
        done = threading.Event()
        assert engine.load_in_background(on_done=done.set)
        assert engine.model_status == "loading"
        assert not engine.load_in_background()  # one load at a time
        assert not engine.wait_for_model(0.05)  # still loading
        release.set()
        assert engine.wait_for_model(10) and done.wait(10)
        assert engine.model_status == "ready" and engine.model_loaded and engine.model_error is None
        assert not engine.load_in_background()  # loaded: nothing to do


def test_a_failed_load_is_recorded_as_one_line_and_can_be_retried(tmp_path, tiny_loaded):
    attempts = []

    def flaky_loader(spec):
        attempts.append(spec)
        if len(attempts) == 1:
            raise ModelLoadError("no model directory at /nope")
        if len(attempts) == 2:
            raise RuntimeError("weights corrupt\nsecond line")
        return tiny_loaded

    with Store(tmp_path / "chat.db") as store:
        engine = ChatEngine(store, "tiny", FAST, loader=flaky_loader)
        with pytest.raises(ModelLoadError):
            engine.load()
        assert (engine.model_status, engine.model_error) == ("failed", "no model directory at /nope")
        assert engine.load_in_background() and engine.wait_for_model(10)
        assert engine.model_status == "failed"
        assert engine.model_error == "cannot load model 'tiny': weights corrupt"
        assert engine.load() is tiny_loaded and engine.model_status == "ready"
