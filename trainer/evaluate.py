"""Evaluating a model on a corpus split: reply perplexity, sampled-reply metrics, the genre test.

Three measurements, all on held-out movies (see `trainer.splits`):

* **Perplexity over reply tokens** (`trainer.perplexity`): over every exchange of
  the split, on the same examples training uses (`trainer.dataset.build_examples`:
  the shared dialogue format, labels -100 over the prompt).
* **Sampled replies** (`trainer.sampled_replies`) to a fixed random sample of
  contexts, decoded as the chat engine decodes: distinct-1/2, mean length, the
  empty rate and the repeat rate (`trainer.text_metrics`), for the model, the
  ground truth and a random-response baseline.
* **Genre conditioning** (`trainer.genre_test`): perplexity with each
  conversation's true genres vs with another movie's (ratio > 1: the genres are
  used). With persona conditioning, the same for the persona (`trainer.persona_test`);
  with `probes`, the context probes (`trainer.probes`).

`trainer.eval_report` turns the result into summary lines, tables and a Markdown report.

    result = evaluate("runs/smollm2-lora", "data/cornell", "validation", EvalConfig(samples=50))
    result["perplexity"], result["genre_perplexity"], result["samples"]["model"]["distinct_2"]
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from moviechat_tui.core.loading import RUN_METADATA, LoadedModel, load_model
from trainer.batching import LengthBucketSampler
from trainer.corpus import Corpus, load_corpus
from trainer.dataset import build_examples
from trainer.example_set import ExampleSet
from trainer.genre_test import genre_perplexity
from trainer.perplexity import perplexity, reply_nll
from trainer.persona_test import persona_perplexity
from trainer.probes import build_probes, run_probes
from trainer.sampled_replies import ReplyGenerator, sampled_replies
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

        def nll_over(sets: Sequence[ExampleSet], description: str) -> tuple[float, int]:
            return _nll_over(loaded.model, sets, config.batch_size, bar, description)

        started = time.perf_counter()
        main_sets = examples_for(corpus, genres)
        n_examples = sum(len(e) for e in main_sets)
        if n_examples == 0:
            raise EvalError(f"the {split} split of {corpus.source or 'the corpus'} has no usable exchanges")
        nll, tokens = nll_over(main_sets, f"perplexity ({split})")
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
            result["genre_perplexity"], result["genre_note"] = genre_perplexity(
                corpus, tokenizer, splits, config, split_args, nll_over, examples_for,
                true_sets=main_sets if genres else None, true_nll=(nll, tokens) if genres else None,
            )
            timings["genre_test"] = time.perf_counter() - started

        if persona and config.persona_test:
            started = time.perf_counter()
            result["persona_perplexity"] = persona_perplexity(
                loaded.model, corpus, tokenizer, splits, (nll, tokens), config, genres, split_args, nll_over)
            timings["persona_test"] = time.perf_counter() - started

        if config.samples:
            started = time.perf_counter()
            result["samples"] = sampled_replies(loaded, corpus, main_sets, config, genres, generator, bar, split_args,
                                                persona)
            timings["sampling"] = time.perf_counter() - started

        if config.probes and config.probe_seeds > 0:
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
