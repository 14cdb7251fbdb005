"""Synthetic recall exchanges: the user states a fact, talks on, then asks for it back.

Cornell scenes almost never ask a character to repeat what was said a few lines earlier, so a
model tuned on them alone learns to answer the last line and forget the rest (measured: the
untuned base names a fact asked back in 43% of sampled replies, the first tuned model in 18%).
A share of these exchanges in the training mix (`--recall-share`) keeps that skill:

    User: Call me Marguerite.                   <- the fact
    Bot:  Whatever you say.                     <- an acknowledgement
    User: <a real line from a training film>    <- 0-3 real exchanges of filler
    Bot:  <the real reply to it>
    User: So who am I, again?                   <- the question
    Bot:  You're Marguerite.                    <- the reply trained on (loss here only)

Some ask the bot its own name, which the persona gives ("Who am I talking to?" -> "I'm Bianca.").
The wording and the values here are the training ones; the evaluation probes
(`trainer.probes`) are written separately, with other sentences and other values, so a model
cannot pass them by having learned these templates (tests/test_probes.py checks the overlap).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from moviechat_tui.core.dialogue import BOT, USER, Conditioning, Turn


@dataclass(frozen=True)
class FactKind:
    statements: tuple[str, ...]  # "{v}" is the value
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    values: tuple[str, ...]


FACT_KINDS: dict[str, FactKind] = {
    "name": FactKind(
        ("I'm {v}, by the way.", "Call me {v}.", "The name's {v}.", "Everybody calls me {v}."),
        ("So who am I, again?", "Say my name.", "Do you even remember who I am?", "Who did I say I was?"),
        ("You're {v}.", "{v}.", "You said {v}.", "You're {v}. I haven't forgotten."),
        ("Marguerite", "Desmond", "Ottilie", "Barnaby", "Lucinda", "Everett", "Philippa", "Cornelius", "Winifred",
         "Thaddeus", "Octavia", "Augustin", "Henrietta", "Lysander", "Imogen", "Fitzgerald"),
    ),
    "hometown": FactKind(
        ("I come from {v}.", "Born and raised in {v}.", "I grew up in {v}, you know.", "Back home in {v} it's different."),
        ("Where am I from?", "Where did I grow up?", "Remember where I come from?", "What's my hometown?"),
        ("You're from {v}.", "{v}.", "You grew up in {v}.", "{v}, you said."),
        ("Tucson", "Baltimore", "Glasgow", "Duluth", "Marseille", "Pittsburgh", "Savannah", "Winnipeg", "Naples",
         "Albuquerque", "Rotterdam", "Spokane", "Cork", "Memphis", "Reno", "Halifax"),
    ),
    "job": FactKind(
        ("I work as a {v}.", "I've been a {v} for ten years.", "I'm a {v}. Don't laugh.", "My job? I'm a {v}."),
        ("What do I do for a living?", "Remember my line of work?", "What did I tell you I do?", "So what's my job again?"),
        ("You're a {v}.", "A {v}.", "You said you were a {v}.", "You work as a {v}."),
        ("plumber", "locksmith", "dentist", "bartender", "carpenter", "pharmacist", "welder", "librarian", "surveyor",
         "taxidermist", "beekeeper", "stenographer", "jeweler", "mechanic", "chemist", "tailor"),
    ),
    "object": FactKind(
        ("I left my {v} in the car.", "I've got a {v} in my bag.", "I brought a {v}, just in case.", "Look after my {v} for me."),
        ("What did I bring along?", "What's in my bag?", "What did I ask you to look after?", "What did I leave behind?"),
        ("Your {v}.", "A {v}.", "You brought a {v}.", "The {v}."),
        ("lantern", "harmonica", "compass", "stopwatch", "telescope", "umbrella", "padlock", "notebook", "flashlight",
         "thermos", "camera", "pocketknife", "typewriter", "accordion", "birdcage", "chessboard"),
    ),
    "pet": FactKind(
        ("I have a dog named {v}.", "My dog's name is {v}.", "I've got a little dog, {v}.", "{v} is my dog. Best friend I have."),
        ("What's my dog called?", "Remember my dog's name?", "Who's my best friend, the dog?", "What did I name my dog?"),
        ("{v}.", "Your dog is {v}.", "{v}, your dog.", "You call him {v}."),
        ("Biscuit", "Rufus", "Pepper", "Duke", "Maple", "Scout", "Barkley", "Noodle", "Ginger", "Bandit", "Waffles",
         "Tater", "Ziggy", "Pickles", "Moose", "Clementine"),
    ),
}

ACKNOWLEDGEMENTS = ("Whatever you say.", "Okay.", "Good for you.", "Why are you telling me this?", "Fine.",
                    "If you say so.", "Huh.", "Is that so?", "I'll remember that.", "Nice.")

OWN_NAME_QUESTIONS = ("Who am I talking to?", "Tell me your name again.", "And you are?", "Remind me who you are.")
OWN_NAME_ANSWERS = ("I'm {v}.", "{v}.", "It's {v}.", "{v}. Remember it.")


@dataclass(frozen=True)
class RecallExchange:
    context: tuple[Turn, ...]
    reply: str
    kind: str
    value: str


def recall_exchange(rng: random.Random, fillers: Sequence[tuple[str, str]], conditioning: Conditioning,
                    max_filler: int = 3) -> RecallExchange:
    """One synthetic exchange; `fillers` are (user line, bot reply) pairs from training films."""
    n_filler = rng.randint(0, max_filler)
    filler = [pair for _ in range(n_filler) for pair in [rng.choice(fillers)]] if fillers else []
    turns: list[Turn] = []
    if conditioning.character and rng.random() < 0.2:
        kind, value = "own_name", conditioning.character
        question, answer = rng.choice(OWN_NAME_QUESTIONS), rng.choice(OWN_NAME_ANSWERS)
        if filler:  # a little talk first, so the question is not always the opening line
            turns += [Turn(USER, filler[0][0]), Turn(BOT, filler[0][1])]
    else:
        kind = rng.choice(sorted(FACT_KINDS))
        fact = FACT_KINDS[kind]
        value = rng.choice(fact.values)
        question, answer = rng.choice(fact.questions), rng.choice(fact.answers)
        turns += [Turn(USER, rng.choice(fact.statements).format(v=value)), Turn(BOT, rng.choice(ACKNOWLEDGEMENTS))]
        for user_line, bot_line in filler:
            turns += [Turn(USER, user_line), Turn(BOT, bot_line)]
    turns.append(Turn(USER, question))
    return RecallExchange(tuple(turns), answer.format(v=value), kind, value)
