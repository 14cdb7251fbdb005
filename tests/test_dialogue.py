"""The dialogue format: one source of truth for training and chat ids."""

import pytest

from moviechat_tui.core.dialogue import (
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
    ids = fmt.prompt_ids(exchange_turns(LINES)[:3], Conditioning(genres=("comedy", "drama")))
    text = gpt2_tokenizer.decode(ids)
    assert text == (
        "Genres: comedy, drama\nUser: Where are you going?<|endoftext|>Bot: Out.<|endoftext|>"
        "User: Out where?<|endoftext|>Bot:"
    )


def test_training_ids_equal_chat_ids_up_to_the_reply(fmt):
    # Chat time: the user has said LINES[0], the bot LINES[1], the user LINES[2].
    history = [Turn(USER, LINES[0]), Turn(BOT, LINES[1]), Turn(USER, LINES[2])]
    cond = Conditioning(genres=("comedy",))
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


# --- persona conditioning --------------------------------------------------------

PERSONA = Conditioning(character="Bianca", partner="Cameron", movie="10 Things I Hate About You", year=1999,
                       genres=("comedy", "romance"))


def test_plain_layout_names_the_persona(gpt2_tokenizer):
    ids = PlainFormat(gpt2_tokenizer).prompt_ids([Turn(USER, "Hi.")], PERSONA)
    assert gpt2_tokenizer.decode(ids) == (
        "Movie: 10 Things I Hate About You (1999)\nGenres: comedy, romance\nBot is Bianca. User is Cameron.\n"
        "User: Hi.<|endoftext|>Bot:")


def test_chat_template_system_message_names_the_persona(chatml_tokenizer):
    text = chatml_tokenizer.decode(format_for(chatml_tokenizer).prompt_ids([Turn(USER, "Hi.")], PERSONA))
    assert ("You are Bianca in the movie 10 Things I Hate About You (1999), talking with Cameron."
            " Stay in character and reply with one line of dialogue. The movie's genres: comedy, romance.") in text


@pytest.mark.parametrize("parts", [{}, {"character": "Bianca"}, {"partner": "Cameron"}, {"movie": "Heat"},
                                   {"movie": "Heat", "year": 1995, "character": "Neil"}])
def test_every_subset_of_the_persona_gives_identical_training_and_chat_ids(fmt, parts):
    cond = Conditioning(**parts)
    history = [Turn(USER, LINES[0]), Turn(BOT, LINES[1]), Turn(USER, LINES[2])]
    chat_prompt = fit_prompt(fmt, history, 1000, cond).ids
    example = training_example(fmt, exchange_turns(LINES)[:-1], LINES[-1], 1000, cond)
    assert example.input_ids[: len(chat_prompt)] == chat_prompt and example.prompt_length == len(chat_prompt)
    for name, value in parts.items():  # each given part is in the prompt, each missing one is not
        assert str(value) in fmt.decode(chat_prompt)


def test_no_persona_keeps_the_prompt_the_first_models_were_trained_with(chatml_tokenizer):
    text = chatml_tokenizer.decode(format_for(chatml_tokenizer).prompt_ids([Turn(USER, "Hi.")],
                                                                            Conditioning(genres=("drama",))))
    assert ("You are a character in a movie. Stay in character and reply with one short line of dialogue."
            " The movie's genres: drama.") in text


def test_conditioning_round_trips_through_its_stored_form():
    assert Conditioning.from_dict(PERSONA.to_dict()) == PERSONA
    assert Conditioning.from_dict({"genres": ["Crime "]}) == Conditioning(genres=("crime",))  # rows of schema v1
    assert Conditioning.from_dict(None) == Conditioning()
    assert PERSONA.describe() == "Bianca (to Cameron) · 10 Things I Hate About You (1999) · comedy, romance"
    assert Conditioning(character="  Rick \n Blaine ").character == "Rick Blaine"
