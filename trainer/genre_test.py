"""Does the model use the genres? Reply perplexity with each movie's true genres vs another movie's.

Every held-out exchange is scored twice: with its movie's genres and with the genres of
another movie (a seeded derangement of the corpus's movies, never an identical set). A model
that uses the genres scores the true ones lower: ratio shuffled / true > 1.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Callable, Sequence

from trainer.corpus import Corpus
from trainer.dataset import build_examples
from trainer.example_set import ExampleSet
from trainer.perplexity import perplexity

NllOver = Callable[[Sequence[ExampleSet], str], tuple[float, int]]  # (sets, progress label) -> (nll, reply tokens)


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


def genre_perplexity(corpus: Corpus, tokenizer, splits: Sequence[str], config, split_args: dict, nll_over: NllOver,
                     examples_for: Callable[[Corpus, bool], list[ExampleSet]], true_sets=None, true_nll=None):
    """({"true", "shuffled", "ratio", ...}, None) or (None, why it was skipped).

    `examples_for(corpus, genres)` builds the sets to score with the true genres, unless `true_sets`
    (and `true_nll`, their (nll, tokens)) were already measured; `nll_over(sets, label)` scores sets."""
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
    true_nll = true_nll or nll_over(true_sets, "perplexity, true genres")
    # Built uncached, for this run alone, each from a copy holding only its split's conversations.
    shuffled_sets = [
        build_examples(
            _with_genres(corpus, donors, [c for c in corpus.conversations if movie_split[c.movie_id] == s]),
            tokenizer, s, max_length=config.max_length, genres=True, cache=False, **split_args,
        )
        for s in splits
    ]
    shuffled_nll = nll_over(shuffled_sets, "perplexity, shuffled genres")
    true_ppl, shuffled_ppl = perplexity(*true_nll), perplexity(*shuffled_nll)
    return {
        "true": true_ppl,
        "shuffled": shuffled_ppl,
        "ratio": shuffled_ppl / true_ppl,
        "examples": sum(len(e) for e in true_sets),
        "shuffled_examples": sum(len(e) for e in shuffled_sets),
    }, None
