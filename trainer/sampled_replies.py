"""Sampled replies to held-out contexts, scored against the ground truth and a random baseline.

A fixed random sample of contexts (seeded) gets replies decoded as the chat engine
decodes them (`GenerationSettings()` defaults, the engine's prompt planning and window,
a fixed seed per sample). `trainer.text_metrics` scores the model's replies, what the
character really said, and a random-response baseline: a seeded random reply from the
train split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from moviechat_tui.core.dialogue import Conditioning, Turn, exchange_turns
from moviechat_tui.core.generation import GenerationSettings, stream_reply
from moviechat_tui.core.loading import LoadedModel
from trainer.corpus import Corpus
from trainer.dataset import ExampleSettings, example_conditioning
from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT
from trainer.text_metrics import reply_metrics


@dataclass(frozen=True)
class EvalSample:
    """One held-out context to reply to."""

    context: tuple[Turn, ...]  # the turns before the reply (back to the conversation start or an empty line)
    reference: str  # what the character really said
    earlier: tuple[str, ...]  # every earlier non-empty line of the conversation (for the repeat rate)
    conditioning: Conditioning  # the movie's genres when evaluating with genres, else none
    movie_id: str
    seed: int  # decoding seed of this sample


ReplyGenerator = Callable[[EvalSample], str]


def pick_samples(corpus: Corpus, sources: Sequence[tuple[int, int]], n: int, seed: int, genres: bool,
                 persona: bool = False) -> list[EvalSample]:
    """A seeded random choice of `n` exchanges among `sources` ((conversation index, reply turn) pairs)."""
    chosen = sorted(random.Random(f"{seed}:samples").sample(range(len(sources)), min(n, len(sources))))
    samples = []
    for k, index in enumerate(chosen):
        conv_index, turn = (int(x) for x in sources[index])
        conv = corpus.conversations[conv_index]
        lines = conv.texts
        start = max((i + 1 for i in range(turn) if not lines[i]), default=0)  # as the examples: back to an empty line
        samples.append(EvalSample(
            context=tuple(exchange_turns(lines[start : turn + 1])[:-1]),
            reference=lines[turn],
            earlier=tuple(line for line in lines[:turn] if line),
            conditioning=example_conditioning(corpus, conv, turn, ExampleSettings(genres=genres, persona=persona)),
            movie_id=conv.movie_id,
            seed=seed + k,
        ))
    return samples


def engine_reply(loaded: LoadedModel, turns, conditioning: Conditioning, settings: GenerationSettings):
    """One reply to `turns`, made as the chat engine makes it (plan_prompt, then stream_reply),
    drained; returns the finished ReplyStream (text and stats)."""
    from moviechat_tui.core.engine import plan_prompt

    prompt, settings = plan_prompt(loaded, list(turns), conditioning, settings)
    stream = stream_reply(loaded, prompt.ids, settings)
    try:
        for _ in stream:
            pass
    finally:
        stream.close()
    return stream


class EngineReplies:
    """The chat engine's decoding as a ReplyGenerator: same window, prompt fitting and settings."""

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings | None = None) -> None:
        self.loaded = loaded
        self.settings = (settings or GenerationSettings()).validate()
        self.new_tokens = 0
        self.seconds = 0.0

    def __call__(self, sample: EvalSample) -> str:
        stream = engine_reply(self.loaded, sample.context, sample.conditioning, self.settings.replace(seed=sample.seed))
        self.new_tokens += stream.stats.new_tokens
        self.seconds += stream.stats.seconds
        return stream.text


def train_replies(corpus: Corpus, ratios=DEFAULT_RATIOS, salt: str = DEFAULT_SALT) -> list[str]:
    """Every non-empty reply (turn after the first) of the train split: the random baseline's pool."""
    return [line for conv in corpus.conversations_in("train", ratios, salt) for line in conv.texts[1:] if line]


def random_baseline(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` replies drawn at random (seeded, with replacement) from `pool`."""
    rng = random.Random(f"{seed}:baseline")
    return [rng.choice(pool) for _ in range(n)]


def sampled_replies(loaded, corpus, main_sets, config, genres, generator, bar, split_args, persona=False) -> dict:
    """Replies to `config.samples` contexts of `main_sets`, with the metrics of the model, the ground truth and
    the random baseline (JSON-ready); `bar`: a rich Progress to advance, or None."""
    sources = [tuple(s) for e in main_sets for s in e.sources]
    samples = pick_samples(corpus, sources, config.samples, config.seed, genres, persona)
    generator = generator or EngineReplies(loaded, GenerationSettings())
    task = bar.add_task("sampling replies", total=len(samples)) if bar else None
    replies = []
    for sample in samples:
        replies.append(generator(sample))
        if bar:
            bar.advance(task)
    earlier = [s.earlier for s in samples]
    pool = train_replies(corpus, **split_args)
    baseline = random_baseline(pool, len(samples), config.seed) if pool else None
    out = {
        "n": len(samples),
        "seed": config.seed,
        "decoding": generator.settings.to_dict() if isinstance(generator, EngineReplies) else "custom generator",
        "model": reply_metrics(replies, earlier),
        "ground_truth": reply_metrics([s.reference for s in samples], earlier),
        "random_baseline": reply_metrics(baseline, earlier) if baseline else None,
        "baseline_note": None if baseline else "no train-split replies to draw a random baseline from",
        "replies": [
            {"context": [t.text for t in s.context], "genres": list(s.conditioning.genres),
             "persona": s.conditioning.describe(), "reference": s.reference,
             "model": reply, "random_baseline": baseline[i] if baseline else None}
            for i, (s, reply) in enumerate(zip(samples, replies))
        ],
    }
    if isinstance(generator, EngineReplies) and generator.seconds:
        out["tokens_per_second"] = generator.new_tokens / generator.seconds
    return out
