"""Evaluating a model on a corpus split: reply perplexity, sampled-reply metrics, the genre test.

Three measurements, all on held-out movies (see `trainer.splits`):

* **Perplexity over reply tokens**: exp(sum of reply-token NLL / reply tokens)
  over every exchange of the split, on the same examples training uses
  (`trainer.dataset.build_examples`: the shared dialogue format, labels -100
  over the prompt). Batched by length, so padding is rare; padding never
  changes the number (each token's loss only sees the tokens before it).
* **Sampled replies** to a fixed random sample of contexts, decoded as the chat
  engine decodes (`GenerationSettings()` defaults, `fit_prompt` with the
  engine's window, a fixed seed per sample). distinct-1/2, mean length, the
  empty rate and the repeat rate, for the model, the ground truth and a
  random-response baseline (a seeded random reply from the train split).
* **Genre conditioning**: perplexity with each conversation's true genres vs
  with another movie's genres (a seeded derangement of the corpus's movies).
  A model that uses the genres scores lower with the true ones (ratio > 1).

Text metrics tokenise lower-cased text into words (`\\w+` with inner
apostrophes: "don't" is one word) and single punctuation marks; distinct-n
counts n-grams inside each reply (never across replies) over all replies.
A reply repeats an earlier turn when its words (lower-cased, punctuation
dropped) equal those of any earlier line of its conversation.

    result = evaluate("runs/smollm2-lora", "data/cornell", "validation", EvalConfig(samples=50))
    result["perplexity"], result["genre_perplexity"], result["samples"]["model"]["distinct_2"]
"""

from __future__ import annotations

import math
import random
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from moviechat_tui.core.dialogue import IGNORE_INDEX, Conditioning, Turn, exchange_turns
from moviechat_tui.core.generation import GenerationSettings, stream_reply
from moviechat_tui.core.loading import RUN_METADATA, LoadedModel, load_model
from trainer.corpus import Corpus, load_corpus
from trainer.batching import Collator, LengthBucketSampler
from trainer.dataset import ExampleSettings, build_examples, example_conditioning
from trainer.example_set import ExampleSet
from trainer.loss import reply_logits
from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT, SPLITS

EVAL_SPLITS = (*SPLITS, "all")


class EvalError(Exception):
    """Evaluation cannot run (empty split, bad setting); the message is one line."""


@dataclass
class EvalConfig:
    samples: int = 200  # held-out contexts to sample replies for; 0 skips sampling
    seed: int = 0  # picks the samples, seeds their decoding, the baseline and the genre shuffle
    max_length: int = 256  # tokens per perplexity example, as in training
    batch_size: int = 16  # examples per perplexity batch
    genres: bool | None = None  # condition on the true genres; None: as the run was trained (else off)
    genre_test: bool = True  # also measure perplexity with true vs shuffled genres
    persona: bool | None = None  # name the characters and the film; None: as the run was trained (else off)
    persona_test: bool = True  # with persona: perplexity with true vs another conversation's persona
    probes: bool = False  # the context probes (trainer.probes): generative recall, forced choice, own name (the CLI's default)
    probe_seeds: int = 3  # sampled replies per probe
    ratios: tuple[float, float, float] | None = None  # the movie split; None: the run's, else the default
    salt: str | None = None


# --- perplexity --------------------------------------------------------------


@torch.inference_mode()
def reply_nll(model, examples: ExampleSet, batch_size: int = 16, advance: Callable[[], None] | None = None,
              pad_id: int | None = None) -> tuple[float, int]:
    """(sum of reply-token negative log-likelihoods in nats, number of reply tokens) over `examples`
    (an ExampleSet, or any sequence of its items with `pad_id` given, e.g. a Subset of one)."""
    collate = Collator(examples.pad_id if pad_id is None else pad_id)
    lengths = getattr(examples, "lengths", None) or [len(examples[i]["input_ids"]) for i in range(len(examples))]
    total, count = 0.0, 0
    for indices in LengthBucketSampler(lengths, batch_size, shuffle=False):
        batch = {k: v.to(model.device) for k, v in collate([examples[i] for i in indices]).items()}
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        logits = reply_logits(model, batch["input_ids"], batch["attention_mask"], keep)
        total += F.cross_entropy(logits.float(), targets[keep], reduction="sum").item()
        count += int(keep.sum())
        if advance:
            advance()
    return total, count


def perplexity(nll: float, tokens: int) -> float:
    return math.exp(nll / tokens) if tokens else float("nan")


# --- genre shuffling -----------------------------------------------------------


def shuffled_genres(corpus: Corpus, seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Each movie with genres gets the genres of another movie, and never an identical set.

    The movies are put in a seeded random cycle and each takes the genres of the
    next one along whose genres differ from its own. Movies without genres keep none.
    Empty when fewer than two distinct genre sets exist (nothing to shuffle).
    """
    movies = corpus.movies
    order = sorted(m for m, movie in movies.items() if movie.genres)
    if len({movies[m].genres for m in order}) < 2:
        return {}
    random.Random(f"{seed}:genres").shuffle(order)
    result = {}
    for i, movie_id in enumerate(order):
        own = movies[movie_id].genres
        ring = order[i + 1 :] + order[:i]  # the others, in cycle order from the next one
        donor = next(m for m in ring if movies[m].genres != own)
        result[movie_id] = movies[donor].genres
    return result


def _with_genres(corpus: Corpus, genres: dict[str, tuple[str, ...]], conversations) -> Corpus:
    """A copy of the corpus with movie genres replaced, holding only `conversations`
    (all movies stay, so every movie keeps its split)."""
    movies = {m: replace(movie, genres=genres.get(m, movie.genres)) for m, movie in corpus.movies.items()}
    return Corpus(movies, corpus.characters, list(conversations), source=corpus.source, layout=corpus.layout)


# --- text metrics ---------------------------------------------------------------

_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def text_tokens(text: str) -> list[str]:
    """Lower-cased words (inner apostrophes kept) and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def words(text: str) -> list[str]:
    return [t for t in text_tokens(text) if t[0].isalnum() or t[0] == "_"]


def normalised(text: str) -> str:
    """What two lines must share to count as the same: their words, ignoring case and punctuation."""
    return " ".join(words(text))


def distinct_n(replies: Iterable[str], n: int) -> float:
    """Unique n-grams / all n-grams, n-grams taken inside each reply; 0 when there are none."""
    grams = [tuple(tokens[i : i + n]) for tokens in map(text_tokens, replies) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeats_earlier_turn(reply: str, earlier: Iterable[str]) -> bool:
    key = normalised(reply)
    return bool(key) and any(key == normalised(line) for line in earlier)


def reply_metrics(replies: Sequence[str], earlier: Sequence[Sequence[str]]) -> dict[str, float]:
    """distinct-1/2, mean words per reply, empty rate, repeat rate; `earlier[i]` are reply i's earlier lines."""
    n = len(replies)
    if n == 0:
        return {"distinct_1": 0.0, "distinct_2": 0.0, "mean_words": 0.0, "empty_rate": 0.0, "repeat_rate": 0.0}
    return {
        "distinct_1": distinct_n(replies, 1),
        "distinct_2": distinct_n(replies, 2),
        "mean_words": sum(len(words(r)) for r in replies) / n,
        "empty_rate": sum(1 for r in replies if not r.strip()) / n,
        "repeat_rate": sum(1 for r, e in zip(replies, earlier) if repeats_earlier_turn(r, e)) / n,
    }


# --- sampled replies ------------------------------------------------------------


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


# --- the run ----------------------------------------------------------------------


def evaluate(
    model: str | LoadedModel,
    corpus: Corpus | str | Path,
    split: str = "validation",
    config: EvalConfig | None = None,
    generator: ReplyGenerator | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate `model` (a spec for `load_model`, or loaded) on `split` of `corpus`; see the module docstring.

    `generator` replaces the engine's decoding (tests inject fixed replies).
    With `progress`, a rich progress bar on stderr shows batches and samples with an ETA.
    Returns a JSON-ready dict (keys: perplexity, genre_perplexity, samples, ...).
    """
    config = config or EvalConfig()
    if split not in EVAL_SPLITS:
        raise EvalError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
    if config.samples < 0 or config.batch_size < 1 or config.max_length < 8:
        raise EvalError("--samples must be >= 0, --batch-size >= 1 and --max-length >= 8")
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if config.max_length > loaded.context_window:
        raise EvalError(f"--max-length {config.max_length} exceeds the model's context window ({loaded.context_window})")
    trained = run_settings(loaded)
    genres = bool(trained.get("genres", False)) if config.genres is None else config.genres
    persona = bool(trained.get("persona", False)) if config.persona is None else config.persona
    split_args = {"ratios": tuple(config.ratios or trained.get("ratios") or DEFAULT_RATIOS),
                  "salt": config.salt or trained.get("salt") or DEFAULT_SALT}
    splits = SPLITS if split == "all" else (split,)
    tokenizer = loaded.tokenizer
    timings: dict[str, float] = {}

    def examples_for(source: Corpus, with_genres: bool) -> list[ExampleSet]:
        return [build_examples(source, tokenizer, s, max_length=config.max_length, genres=with_genres, persona=persona,
                               **split_args) for s in splits]

    with _progress_bar(progress) as bar:
        started = time.perf_counter()
        main_sets = examples_for(corpus, genres)
        n_examples = sum(len(e) for e in main_sets)
        if n_examples == 0:
            raise EvalError(f"the {split} split of {corpus.source or 'the corpus'} has no usable exchanges")
        nll, tokens = _nll_over(loaded.model, main_sets, config.batch_size, bar, f"perplexity ({split})")
        timings["perplexity"] = time.perf_counter() - started

        result = {
            "model": loaded.name,
            "model_source": loaded.source,
            "corpus": corpus.source,
            "split": split,
            "genres": genres,
            "persona": persona,
            "config": {**asdict(config), "genres": genres, "persona": persona, **split_args},
            "device": str(loaded.model.device),
            "examples": n_examples,
            "reply_tokens": tokens,
            "perplexity": perplexity(nll, tokens),
            "genre_perplexity": None,
            "genre_note": None,
            "persona_perplexity": None,
            "probes": None,
            "samples": None,
            "seconds": timings,
        }

        if config.genre_test:
            started = time.perf_counter()
            result["genre_perplexity"], result["genre_note"] = _genre_test(
                loaded, corpus, splits, config, bar,
                true_sets=main_sets if genres else None, true_nll=(nll, tokens) if genres else None,
                examples_for=examples_for, split_args=split_args,
            )
            timings["genre_test"] = time.perf_counter() - started

        if persona and config.persona_test:
            from trainer.persona_test import persona_perplexity

            started = time.perf_counter()
            result["persona_perplexity"] = persona_perplexity(
                loaded.model, corpus, tokenizer, splits, (nll, tokens), config, genres, split_args,
                lambda sets, what: _nll_over(loaded.model, sets, config.batch_size, bar, what))
            timings["persona_test"] = time.perf_counter() - started

        if config.samples:
            started = time.perf_counter()
            result["samples"] = _sampled_replies(loaded, corpus, main_sets, config, genres, generator, bar, split_args,
                                                 persona)
            timings["sampling"] = time.perf_counter() - started

        if config.probes and config.probe_seeds > 0:
            from trainer.probes import build_probes, run_probes

            started = time.perf_counter()
            task = bar.add_task("context probes", total=len(build_probes(config.seed))) if bar else None
            result["probes"] = run_probes(loaded, config.probe_seeds, config.seed,
                                          advance=(lambda: bar.advance(task)) if bar else None)
            timings["probes"] = time.perf_counter() - started
    return result


def run_settings(loaded: LoadedModel) -> dict:
    """The training settings of a trainer run (its moviechat_run.json "settings"); {} for any other model.
    They give the defaults for genre conditioning and the movie split."""
    import json

    try:
        meta = json.loads((Path(loaded.source) / RUN_METADATA).read_text())
    except (OSError, ValueError):
        return {}
    settings = meta.get("settings") if isinstance(meta, dict) else None
    return settings if isinstance(settings, dict) else {}


def _nll_over(model, sets: Sequence[ExampleSet], batch_size: int, bar, description: str) -> tuple[float, int]:
    batches = sum(len(LengthBucketSampler(e.lengths, batch_size, shuffle=False)) for e in sets)
    task = bar.add_task(description, total=batches) if bar else None
    advance = (lambda: bar.advance(task)) if bar else None
    nll = tokens = 0
    for examples in sets:
        if len(examples):
            part_nll, part_tokens = reply_nll(model, examples, batch_size, advance)
            nll, tokens = nll + part_nll, tokens + part_tokens
    return nll, tokens


def _genre_test(loaded, corpus, splits, config, bar, true_sets, true_nll, examples_for, split_args):
    """({"true", "shuffled", "ratio", ...}, None) or (None, why it was skipped)."""
    if not any(movie.genres for movie in corpus.movies.values()):
        return None, "skipped: the corpus has no genres"
    donors = shuffled_genres(corpus, config.seed)
    if not donors:
        return None, "skipped: fewer than two distinct genre sets in the corpus, nothing to shuffle"
    movie_split = corpus.split_of_movies(**split_args)
    if not any(movie_split[m] in splits for m in donors):
        return None, "skipped: no movie of this split has genres"
    if true_sets is None:
        true_sets = examples_for(corpus, True)
    true_nll = true_nll or _nll_over(loaded.model, true_sets, config.batch_size, bar, "perplexity, true genres")
    # Built uncached, for this run alone, each from a copy holding only its split's conversations.
    shuffled_sets = [
        build_examples(
            _with_genres(corpus, donors, [c for c in corpus.conversations if movie_split[c.movie_id] == s]),
            loaded.tokenizer, s, max_length=config.max_length, genres=True, cache=False, **split_args,
        )
        for s in splits
    ]
    shuffled_nll = _nll_over(loaded.model, shuffled_sets, config.batch_size, bar, "perplexity, shuffled genres")
    true_ppl, shuffled_ppl = perplexity(*true_nll), perplexity(*shuffled_nll)
    return {
        "true": true_ppl,
        "shuffled": shuffled_ppl,
        "ratio": shuffled_ppl / true_ppl,
        "examples": sum(len(e) for e in true_sets),
        "shuffled_examples": sum(len(e) for e in shuffled_sets),
    }, None


def _sampled_replies(loaded, corpus, main_sets, config, genres, generator, bar, split_args, persona=False) -> dict:
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


def _progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


# --- reports ----------------------------------------------------------------------

METRIC_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "mean_words": "mean reply length (words)",
    "empty_rate": "empty replies",
    "repeat_rate": "repeats an earlier turn",
}
COLUMNS = (("model", "model"), ("ground_truth", "ground truth"), ("random_baseline", "random train reply"))


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("_rate"):
        return f"{value:.1%}"
    return f"{value:.2f}" if key == "mean_words" else f"{value:.3f}"


def _split_words(split: str) -> str:
    return "all splits" if split == "all" else f"the {split} split"


def summary_lines(result: dict) -> list[str]:
    lines = [
        f"model {result['model']} on {_split_words(result['split'])} of {result['corpus']} "
        f"({'with' if result['genres'] else 'without'} genre conditioning)",
        f"perplexity over reply tokens: {result['perplexity']:.2f} "
        f"({result['examples']:,} exchanges, {result['reply_tokens']:,} reply tokens)",
    ]
    g = result["genre_perplexity"]
    if g:
        lines.append(f"genre test: perplexity {g['true']:.2f} with the true genres, {g['shuffled']:.2f} with shuffled ones "
                     f"(shuffled / true = {g['ratio']:.3f})")
    elif result["genre_note"]:
        lines.append(f"genre test {result['genre_note']}")
    p = result.get("persona_perplexity")
    if p:
        lines.append(f"persona test: perplexity {p['true']:.2f} with the true characters and film, {p['shuffled']:.2f} "
                     f"with another conversation's (shuffled / true = {p['ratio']:.3f})")
    probes = result.get("probes")
    if probes:
        lines.append(f"context probes ({probes['probes']} conversations x {probes['seeds']} sampled replies): "
                     f"names the fact in {probes['recall']:.1%} of replies, its own persona name in "
                     f"{probes['own_name']:.1%}; forced choice {probes['forced_choice']:.1%}")
    s = result["samples"]
    if s is None:
        lines.append("sampled replies: skipped (--samples 0)")
    else:
        lines.append(f"sampled replies: {s['n']} contexts, seed {s['seed']}, the engine's default decoding")
    return lines


def markdown_report(result: dict, examples: int = 5) -> str:
    out = [f"# Evaluation: {result['model']} ({result['split']})", ""]
    out += [f"- {line}" for line in summary_lines(result)]
    s = result["samples"]
    if s:
        out += ["", "| metric | " + " | ".join(label for _, label in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
        for key, label in METRIC_LABELS.items():
            cells = [_cell(key, s[column][key] if s[column] else None) for column, _ in COLUMNS]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        if s["replies"][:examples]:
            out += ["", "Sample replies:", "", "| last context turn | ground truth | model |", "|---|---|---|"]
            for r in s["replies"][:examples]:
                cells = (r["context"][-1] if r["context"] else "", r["reference"], r["model"])
                out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out) + "\n"


def print_report(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for line in summary_lines(result):
        console.print(line, highlight=False)
    s = result["samples"]
    if s:
        table = Table(title=f"Sampled replies ({s['n']} held-out contexts)")
        table.add_column("metric")
        for _, label in COLUMNS:
            table.add_column(label, justify="right")
        for key, label in METRIC_LABELS.items():
            table.add_row(label, *(_cell(key, s[column][key] if s[column] else None) for column, _ in COLUMNS))
        console.print(table)


def default_report_path(model_spec: str, result: dict) -> Path:
    """Next to the model for a trainer run directory, else eval-<model>-<split>.md in the current directory."""
    spec_path = Path(model_spec).expanduser()
    if spec_path.is_dir() and (spec_path / RUN_METADATA).is_file():
        return spec_path / f"eval-{result['split']}.md"
    name = re.sub(r"[^\w.-]+", "-", Path(result["model_source"]).name if spec_path.is_dir() else model_spec).strip("-")
    return Path(f"eval-{name or 'model'}-{result['split']}.md")
