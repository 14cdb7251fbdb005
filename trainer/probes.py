"""Context probes: does the bot use what was said a few exchanges ago, and know who it plays?

72 short conversations. In 60 the user states a fact (their name, city, job, something they carry,
their cat's name), talks on for 1-4 exchanges counting the statement's own, then asks for it; in
12 the user asks the bot its own name, which only the persona gives. Two measurements:

* generative recall: replies sampled as the chat engine samples them (its default settings,
  `seeds` per probe); the share that names the fact (`names_fact`).
* forced choice: the log-likelihood of four candidate replies ("Rosalind." vs three other names of
  the same kind); the share of probes whose true one scores highest.

The sentences and values are written for evaluation only. The recall exchanges mixed into training
(`trainer.recall`) use other templates and other values; tests/test_probes.py checks that no
sentence or value is shared.

    report = run_probes(load_model("default", backend="transformers"), seeds=3)
    report["recall"], report["forced_choice"], report["own_name"]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from moviechat_tui.core.cast import fold, load_cast
from moviechat_tui.core.dialogue import BOT, USER, Conditioning, Turn, fit_prompt
from moviechat_tui.core.generation import GenerationSettings
from trainer.sampled_replies import engine_reply

PROBE_KINDS: dict[str, dict] = {
    "name": {
        "statements": ("My name is {v}.", "People know me as {v}.", "Hello there. {v}, pleased to meet you."),
        "questions": ("What did I say my name was?", "Do you remember my name?", "Sorry, what was my name again?"),
        "values": ("Rosalind", "Theodore", "Beatrix", "Ignatius", "Wilhelmina", "Percival", "Georgina", "Bartholomew"),
        "answer": "{v}.",
    },
    "city": {
        "statements": ("I live in {v}.", "I just moved to {v}.", "These days I'm living in {v}."),
        "questions": ("Which city do I live in?", "Where did I say I live?", "So where do I live now?"),
        "values": ("Lisbon", "Omaha", "Dublin", "Tacoma", "Buffalo", "Seville", "Boise", "Antwerp"),
        "answer": "{v}.",
    },
    "job": {
        "statements": ("I'm a {v} by trade.", "I make my living as a {v}.", "For work, I'm a {v}."),
        "questions": ("What's my job?", "What do I do for work?", "Remember what I do for money?"),
        "values": ("nurse", "firefighter", "architect", "pilot", "electrician", "baker", "translator", "veterinarian"),
        "answer": "A {v}.",
    },
    "object": {
        "statements": ("There's a {v} in my pocket.", "I'm carrying a {v}.", "I found a {v} on the street today."),
        "questions": ("What's in my pocket?", "What am I carrying?", "What did I find today?"),
        "values": ("key", "whistle", "marble", "coin", "ribbon", "postcard", "matchbox", "feather"),
        "answer": "A {v}.",
    },
    "cat": {
        "statements": ("My cat is called {v}.", "I named my cat {v}.", "I have a cat. Her name is {v}."),
        "questions": ("What's my cat's name?", "What did I call my cat?", "Do you remember my cat's name?"),
        "values": ("Mittens", "Oliver", "Smokey", "Cleo", "Jasper", "Luna", "Felix", "Tigger"),
        "answer": "{v}.",
    },
}
OWN_NAME_PROBE_QUESTIONS = ("What's your name?", "What do people call you?", "I didn't catch your name.")
PROBE_ACKNOWLEDGEMENTS = ("Okay, noted.", "Interesting.", "Right.", "Sure thing.")
PROBE_FILLER = (
    ("Nice weather today.", "I suppose it is."),
    ("Did you see the game last night?", "I missed it."),
    ("I'm getting hungry.", "We'll eat soon."),
    ("This coffee is terrible.", "Then don't drink it."),
    ("Have you ever been to the ocean?", "Once, when I was small."),
    ("The train is late again.", "It always is."),
    ("Do you like music?", "Depends on the music."),
    ("I couldn't sleep last night.", "Me neither."),
    ("What time is it?", "Almost eight."),
    ("That movie was too long.", "I liked the ending."),
    ("My feet hurt.", "Sit down for a minute."),
    ("Are you busy tomorrow?", "I might be."),
)
DISTANCES = (1, 2, 3, 4)  # exchanges from the fact's statement to the question, the statement's included
_NAME_TITLES = {"mr", "mrs", "ms", "miss", "dr", "doctor", "sir", "lady", "lord", "captain", "agent", "officer",
                "detective", "father", "mother", "the", "young", "old", "big", "little", "man", "woman", "guy", "girl"}


@dataclass(frozen=True)
class Probe:
    kind: str  # a PROBE_KINDS key or "own_name"
    turns: tuple[Turn, ...]  # ends with the user's question
    value: str  # what the reply should name
    candidates: tuple[str, ...]  # forced choice: candidate replies, the true one first
    conditioning: Conditioning
    distance: int

    @property
    def keywords(self) -> list[str]:
        """Words any one of which, in the reply, names the value (for a character, their name's own words)."""
        words = fold(self.value).split()
        named = [w for w in words if w not in _NAME_TITLES and len(w) > 1] if self.kind == "own_name" else words
        return named or words


def build_probes(seed: int = 0) -> list[Probe]:
    """The probe set: fixed for a seed (personas come from the shipped cast)."""
    rng = random.Random(f"probes:{seed}")
    cast = load_cast()
    films = [m for m in cast.movies if len(m.characters) >= 2]

    def persona() -> Conditioning:
        film = rng.choice(films)
        bot, user = rng.sample(film.characters, 2)
        return Conditioning(character=bot.name, partner=user.name, movie=film.title, year=film.year, genres=film.genres)

    probes: list[Probe] = []
    for kind, spec in PROBE_KINDS.items():
        for distance in DISTANCES:
            for variant in range(3):
                value = rng.choice(spec["values"])
                distractors = rng.sample([v for v in spec["values"] if v != value], 3)
                turns = [Turn(USER, spec["statements"][variant].format(v=value)), Turn(BOT, rng.choice(PROBE_ACKNOWLEDGEMENTS))]
                for user_line, bot_line in rng.sample(PROBE_FILLER, distance - 1):
                    turns += [Turn(USER, user_line), Turn(BOT, bot_line)]
                turns.append(Turn(USER, spec["questions"][(variant + distance) % 3]))
                conditioning = persona() if (distance + variant) % 2 == 0 else Conditioning()
                candidates = tuple(spec["answer"].format(v=v) for v in (value, *distractors))
                probes.append(Probe(kind, tuple(turns), value, candidates, conditioning, distance))
    for k in range(12):
        conditioning = persona()
        film = next(m for m in films if m.title == conditioning.movie and m.year == conditioning.year)
        others = [c.name for c in film.characters if c.name not in (conditioning.character, conditioning.partner)]
        others += [c.name for c in rng.sample(films, 3)[0].characters]  # small casts: borrow names
        distractors = rng.sample(sorted(set(others)), 3)
        turns: list[Turn] = []
        for user_line, bot_line in rng.sample(PROBE_FILLER, k % 4):
            turns += [Turn(USER, user_line), Turn(BOT, bot_line)]
        turns.append(Turn(USER, OWN_NAME_PROBE_QUESTIONS[k % 3]))
        candidates = tuple(f"{name}." for name in (conditioning.character, *distractors))
        probes.append(Probe("own_name", tuple(turns), conditioning.character, candidates, conditioning, k % 4))
    return probes


def names_fact(reply: str, probe: Probe) -> bool:
    words = set(fold(reply).split())
    return any(keyword in words for keyword in probe.keywords)


# --- scoring ----------------------------------------------------------------------------


@torch.inference_mode()
def forced_choice(loaded, probe: Probe, max_prompt_tokens: int = 768) -> int:
    """Index of the candidate reply with the highest total log-likelihood (0 = the true one)."""
    model, fmt = loaded.model, loaded.format
    prompt = fit_prompt(fmt, probe.turns, max_prompt_tokens, probe.conditioning).ids
    scores = []
    for candidate in probe.candidates:
        reply = fmt.reply_ids(candidate)
        ids = torch.tensor([prompt + reply], device=model.device)
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # positions predicting the reply
        scores.append(torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None]).sum().item())
    return max(range(len(scores)), key=scores.__getitem__)


ReplySampler = Callable[[Probe, int], str]  # (probe, seed) -> reply text


def engine_sampler(loaded, settings: GenerationSettings | None = None) -> ReplySampler:
    """Replies as the chat engine makes them: its window, prompt fitting and decoding settings."""
    base = (settings or GenerationSettings()).validate()
    return lambda probe, seed: engine_reply(loaded, probe.turns, probe.conditioning, base.replace(seed=seed)).text


def run_probes(loaded, seeds: int = 3, probe_seed: int = 0, sampler: ReplySampler | None = None,
               advance: Callable[[], None] | None = None, probes: Sequence[Probe] | None = None) -> dict:
    """Generative recall and forced choice over the probe set (or `probes`); JSON-ready."""
    probes = list(probes) if probes is not None else build_probes(probe_seed)
    sampler = sampler or engine_sampler(loaded)
    rows, by_kind = [], {}
    for index, probe in enumerate(probes):
        replies = [sampler(probe, 1000 * index + s) for s in range(seeds)]
        hits = [names_fact(r, probe) for r in replies]
        choice = forced_choice(loaded, probe)
        rows.append({"kind": probe.kind, "distance": probe.distance, "value": probe.value,
                     "persona": probe.conditioning.describe(), "question": probe.turns[-1].text,
                     "replies": replies, "names_fact": hits, "forced_choice_correct": choice == 0})
        kind = by_kind.setdefault(probe.kind, {"replies": 0, "named": 0, "probes": 0, "choice": 0})
        kind["replies"] += len(hits)
        kind["named"] += sum(hits)
        kind["probes"] += 1
        kind["choice"] += choice == 0
        if advance:
            advance()
    fact_rows = [r for r in rows if r["kind"] != "own_name"]
    share = lambda rs: sum(sum(r["names_fact"]) for r in rs) / max(1, sum(len(r["names_fact"]) for r in rs))  # noqa: E731
    return {
        "probes": len(rows),
        "seeds": seeds,
        "recall": share(fact_rows),  # facts the user stated
        "own_name": share([r for r in rows if r["kind"] == "own_name"]),  # "What's your name?" -> the persona's
        "recall_all": share(rows),
        "forced_choice": sum(r["forced_choice_correct"] for r in rows) / len(rows),
        "by_kind": {k: {"recall": v["named"] / v["replies"], "forced_choice": v["choice"] / v["probes"]}
                    for k, v in by_kind.items()},
        "by_distance": {d: share([r for r in fact_rows if r["distance"] == d]) for d in DISTANCES},
        "rows": rows,
    }


def probe_template_strings() -> set[str]:
    """Every sentence template of the probes (for the no-overlap test with the training templates)."""
    strings = {s for spec in PROBE_KINDS.values() for key in ("statements", "questions") for s in spec[key]}
    return strings | set(OWN_NAME_PROBE_QUESTIONS) | set(PROBE_ACKNOWLEDGEMENTS) | {
        line for pair in PROBE_FILLER for line in pair}


def probe_values() -> set[str]:
    return {v for spec in PROBE_KINDS.values() for v in spec["values"]}
