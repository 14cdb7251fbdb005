"""The prefix cache: the next turn's history is read ahead of time, and replies stay the same."""

from __future__ import annotations

import pytest

from moviechat_tui.core.backends import MIN_PREFIX_TOKENS, ct2
from moviechat_tui.core.dialogue import BOT, USER, Conditioning, Turn, fit_prompt, format_for, next_turn_prefix
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.generation import GenerationSettings, stream_reply, warm_prefix
from moviechat_tui.core.loading import load_model
from moviechat_tui.core.store import Store

GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.3, no_repeat_ngram_size=3, max_new_tokens=10)
HISTORY = [Turn(USER, "You're late. The boat leaves at midnight."), Turn(BOT, "I had to lose a tail on the way."),
           Turn(USER, "A tail? Who else knows about tonight?"), Turn(BOT, "Nobody, if you kept quiet.")]


@pytest.mark.parametrize("tokenizer_name", ["gpt2_tokenizer", "chatml_tokenizer"])
@pytest.mark.parametrize("message", ["Hello.", "'s that so?", "  spaced out  ", "Ünïcode — 東京!", "?"])
def test_every_next_prompt_starts_with_the_next_turn_prefix(request, tokenizer_name, message):
    fmt = format_for(request.getfixturevalue(tokenizer_name))
    conditioning = Conditioning.from_genres(["crime", "drama"])
    prefix = next_turn_prefix(fmt, HISTORY, 512, conditioning)
    prompt = fit_prompt(fmt, [*HISTORY, Turn(USER, message.strip())], 512, conditioning).ids
    assert len(prefix) > len(fmt.prompt_ids(HISTORY, conditioning)) - 8  # the whole history, nearly
    assert prompt[: len(prefix)] == prefix and len(prompt) > len(prefix)


@pytest.fixture(scope="module")
def fast_tiny(tiny_gpt2_dir):
    loaded = load_model(str(tiny_gpt2_dir), backend="ctranslate2")
    assert loaded.fast is not None
    return loaded


def _greedy_ids(loaded, prompt_ids):
    stream = stream_reply(loaded, prompt_ids, GREEDY)
    text = "".join(stream)
    return text, stream.stats.new_tokens


def test_a_warmed_prefix_is_used_and_the_reply_is_token_for_token_the_same(fast_tiny):
    fmt = fast_tiny.format
    prompt = fmt.prompt_ids([*HISTORY, Turn(USER, "Then who was in the car?")])
    fast_tiny.fast.clear_prefixes()
    cold = _greedy_ids(fast_tiny, prompt)

    prefix = next_turn_prefix(fmt, HISTORY, 1024)
    assert warm_prefix(fast_tiny, prefix, wait=True) is not None
    assert fast_tiny.fast.cached_prefix(prompt) == len(prefix)
    hits = fast_tiny.fast.prefix_hits
    warm = _greedy_ids(fast_tiny, prompt)
    assert fast_tiny.fast.prefix_hits == hits + 1
    assert warm == cold and cold[1] > 0

    # A prompt that doesn't start with it reads everything, as before.
    other = fmt.prompt_ids([Turn(USER, "Somebody else entirely.")])
    assert fast_tiny.fast.cached_prefix(other) == 0
    _greedy_ids(fast_tiny, other)
    assert fast_tiny.fast.prefix_hits == hits + 1


def test_the_cache_is_bounded_and_short_prefixes_are_not_kept(fast_tiny, monkeypatch):
    fmt = fast_tiny.format
    fast_tiny.fast.clear_prefixes()
    assert not fast_tiny.fast.warm(fmt.prompt_ids([Turn(USER, "Hi")])[: MIN_PREFIX_TOKENS - 1])
    first = next_turn_prefix(fmt, HISTORY[:2], 1024)
    second = next_turn_prefix(fmt, HISTORY, 1024)
    monkeypatch.setattr(ct2, "MAX_CACHED_TOKENS", len(first) + len(second) - 1)
    assert fast_tiny.fast.warm(first)
    assert not fast_tiny.fast.warm(first)  # already there
    generator = fast_tiny.fast.generator
    assert fast_tiny.fast.warm(second)  # over the limit: a fresh generator, then this one
    assert fast_tiny.fast.generator is not generator and list(fast_tiny.fast.prefixes) == [tuple(second)]


def test_the_engine_warms_the_next_turn_while_the_user_types(tiny_gpt2_dir, tmp_path):
    loaded = load_model(str(tiny_gpt2_dir), backend="ctranslate2")
    engine = ChatEngine(Store(tmp_path / "chat.db"), model_spec=str(tiny_gpt2_dir), settings=GREEDY,
                        loader=lambda spec: loaded)
    conversation = engine.new_conversation()
    first = engine.send(conversation.id, "You're late.")
    first.consume()
    first.warm_up.join()
    assert len(loaded.fast.prefixes) == 1
    hits = loaded.fast.prefix_hits
    second = engine.send(conversation.id, "Who else knows?")
    second_text = second.consume()
    assert loaded.fast.prefix_hits == hits + 1

    # The same conversation replayed on a cold copy of the model answers the same.
    cold = load_model(str(tiny_gpt2_dir), backend="ctranslate2")
    history = [Turn(m.role, m.text) for m in engine.messages(conversation.id)][:-1]
    stream = stream_reply(cold, fit_prompt(cold.format, history, 1024 - GREEDY.max_new_tokens).ids, GREEDY)
    assert "".join(stream).strip() == second_text and cold.fast.prefix_hits == 0


def test_opening_a_saved_conversation_reads_it_ahead(tiny_gpt2_dir, tmp_path):
    # Another session (a restart, the other front end) opens the conversation: nothing is warm yet.
    db = tmp_path / "chat.db"
    writer = ChatEngine(Store(db), model_spec=str(tiny_gpt2_dir), settings=GREEDY,
                        loader=lambda spec: load_model(spec, backend="ctranslate2"))
    conversation = writer.new_conversation()
    writer.send(conversation.id, "You're late. The boat leaves at midnight.").consume()
    loaded = load_model(str(tiny_gpt2_dir), backend="ctranslate2")
    engine = ChatEngine(Store(db), model_spec=str(tiny_gpt2_dir), settings=GREEDY, loader=lambda spec: loaded)
    assert engine.read_ahead(conversation.id) is None  # the model isn't loaded: nothing is forced
    engine.load()
    engine.read_ahead(conversation.id).join()
    assert len(loaded.fast.prefixes) == 1
    reply = engine.send(conversation.id, "Who else knows?")
    text = reply.consume()
    assert loaded.fast.prefix_hits == 1
    # The same as a reply that read everything.
    cold = load_model(str(tiny_gpt2_dir), backend="ctranslate2")
    history = [Turn(m.role, m.text) for m in engine.messages(conversation.id)][:-1]
    stream = stream_reply(cold, fit_prompt(cold.format, history, 1024 - GREEDY.max_new_tokens).ids, GREEDY)
    assert "".join(stream).strip() == text and cold.fast.prefix_hits == 0
    # A branch that ends with the user's message (its reply failed) has nothing to read ahead for.
    engine.store.add_message(conversation.id, USER, "Hello?", parent_id=reply.message.id)
    assert engine.read_ahead(conversation.id) is None


def test_the_transformers_path_continues_from_a_warmed_kv_cache(tiny_gpt2_dir):
    loaded = load_model(str(tiny_gpt2_dir), backend="transformers")
    fmt = loaded.format
    prompt = fmt.prompt_ids([*HISTORY, Turn(USER, "Then who was in the car?")])
    cold = _greedy_ids(loaded, prompt)
    assert loaded.transformers.prefix_hits == 0

    prefix = next_turn_prefix(fmt, HISTORY, 1024)
    warm_prefix(loaded, prefix, wait=True)
    assert list(loaded.transformers.prefix_states) == [tuple(prefix)]
    for _ in range(2):  # the warmed state is copied, not used up
        assert _greedy_ids(loaded, prompt) == cold
    assert loaded.transformers.prefix_hits == 2
    assert loaded.transformers.prefix_states[tuple(prefix)].get_seq_length() == len(prefix)
