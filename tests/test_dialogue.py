"""The dialogue format: one source of truth for training and chat ids."""

import pytest

from moviechat_tui.dialogue import (
    BOT,
    IGNORE_INDEX,
    USER,
    ChatTemplateFormat,
    Conditioning,
    PlainFormat,
    Turn,
    exchange_turns,
    fit_prompt,
    format_for,
    training_example,
)

LINES = ["Where are you going?", "Out.", "Out where?", "Just out, Mom."]


@pytest.fixture(params=["plain", "chatml"])
def fmt(request, gpt2_tokenizer, chatml_tokenizer):
    return format_for(gpt2_tokenizer if request.param == "plain" else chatml_tokenizer)


def test_format_is_chosen_from_the_tokenizer(gpt2_tokenizer, chatml_tokenizer):
    assert isinstance(format_for(gpt2_tokenizer), PlainFormat)
    chat = format_for(chatml_tokenizer)
    assert isinstance(chat, ChatTemplateFormat)
    assert chat.end_of_turn_id == chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_plain_layout_round_trips(gpt2_tokenizer):
    fmt = PlainFormat(gpt2_tokenizer)
    ids = fmt.prompt_ids(exchange_turns(LINES)[:3], Conditioning(("comedy", "drama")))
    text = gpt2_tokenizer.decode(ids)
    assert text == (
        "Genres: comedy, drama\nUser: Where are you going?<|endoftext|>Bot: Out.<|endoftext|>"
        "User: Out where?<|endoftext|>Bot:"
    )


def test_training_ids_equal_chat_ids_up_to_the_reply(fmt):
    # Chat time: the user has said LINES[0], the bot LINES[1], the user LINES[2].
    history = [Turn(USER, LINES[0]), Turn(BOT, LINES[1]), Turn(USER, LINES[2])]
    cond = Conditioning(("comedy",))
    chat_prompt = fit_prompt(fmt, history, 1000, cond).ids

    # Training time: the same stretch of film dialogue, reply LINES[3].
    turns = exchange_turns(LINES)
    example = training_example(fmt, turns[:-1], turns[-1].text, 1000, cond)

    assert turns[:-1] == history
    assert example.input_ids[: len(chat_prompt)] == chat_prompt
    assert example.prompt_length == len(chat_prompt)
    # Only the reply (and its end-of-turn) carries labels.
    reply = example.input_ids[len(chat_prompt):]
    assert example.labels[len(chat_prompt):] == reply
    assert set(example.labels[: len(chat_prompt)]) == {IGNORE_INDEX}
    assert reply[-1] == fmt.end_of_turn_id
    assert fmt.decode(reply).strip() == LINES[3]


def test_exchange_roles_alternate_back_from_the_reply():
    assert [t.role for t in exchange_turns(["a", "b", "c"])] == [BOT, USER, BOT]
    assert [t.role for t in exchange_turns(["a", "b"])] == [USER, BOT]


def test_fit_prompt_drops_oldest_turns_first(fmt):
    turns = [Turn(USER if i % 2 == 0 else BOT, f"line number {i} " * 5) for i in range(21)]
    full = len(fmt.prompt_ids(turns))
    fitted = fit_prompt(fmt, turns, full - 10)
    assert fitted.dropped_turns >= 1
    assert fitted.turns == turns[fitted.dropped_turns:]
    assert fitted.turns[-1] == turns[-1]
    assert len(fitted.ids) <= full - 10
    assert not fitted.cut_message


def test_fit_prompt_cuts_a_single_overlong_message_with_a_notice(fmt):
    long_text = " ".join(f"word{i}" for i in range(400)) + " what now?"
    turns = [Turn(USER, "hi"), Turn(BOT, "hello"), Turn(USER, long_text)]
    fitted = fit_prompt(fmt, turns, 120)
    assert len(fitted.ids) <= 120
    assert fitted.cut_message and fitted.notices
    assert fitted.turns[-1].role == USER
    assert fitted.turns[-1].text.endswith("what now?")  # the newest words are kept


def test_training_example_truncates_context_from_the_oldest(fmt):
    turns = exchange_turns([f"sentence {i} " * 8 for i in range(10)])
    full = training_example(fmt, turns[:-1], turns[-1].text, 10_000)
    short = training_example(fmt, turns[:-1], turns[-1].text, len(full.input_ids) - 20)
    assert short.dropped_turns >= 1
    assert len(short.input_ids) <= len(full.input_ids) - 20
    # The kept tail is identical: the newest context survives.
    n_reply = len(fmt.reply_ids(turns[-1].text))
    assert short.input_ids[-n_reply - 10:] == full.input_ids[-n_reply - 10:]
    assert training_example(fmt, turns[:-1], "x " * 500, 50) is None
    # A reply that leaves room for less than an empty context turn is skipped, not an error.
    reply = "word " * 10
    room = len(fmt.reply_ids(reply)) + 2
    assert training_example(fmt, turns[:-1], reply, room) is None
