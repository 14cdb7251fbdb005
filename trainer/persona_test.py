"""Does the model use who it plays? Reply perplexity with each conversation's own persona vs another's.

Every held-out exchange is scored twice: with its true conditioning (the replying character, the
character spoken to, the film, its genres) and with the conditioning of an exchange from another
film (a seeded derangement). A model that uses the persona scores the true one lower: ratio
shuffled / true > 1.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from trainer.corpus import Corpus
from trainer.dataset import ExampleSettings, build_examples, example_conditioning
from trainer.example_set import ExampleSet
from trainer.perplexity import perplexity


def shuffled_personas(corpus: Corpus, indices: Sequence[int], genres: bool, seed: int = 0):
    """conditioning_of(conversation index, reply turn) giving each exchange the persona of an exchange
    of another film (the same donor for every turn of a conversation)."""
    settings = ExampleSettings(genres=genres, persona=True)
    order = list(indices)
    random.Random(f"{seed}:personas").shuffle(order)
    donors = {}
    for i, conv_index in enumerate(order):
        movie = corpus.conversations[conv_index].movie_id
        ring = order[i + 1 :] + order[:i]
        donors[conv_index] = next((d for d in ring if corpus.conversations[d].movie_id != movie), None)

    def conditioning_of(conv_index: int, turn: int):
        donor = donors.get(conv_index)
        if donor is None:  # a split with a single film: nothing to swap with
            return example_conditioning(corpus, corpus.conversations[conv_index], turn, settings)
        conv = corpus.conversations[donor]
        return example_conditioning(corpus, conv, min(turn, len(conv.utterances) - 1) or 1, settings)

    return conditioning_of


def persona_perplexity(model, corpus: Corpus, tokenizer, splits: Sequence[str], true_nll: tuple[float, int], config,
                       genres: bool, split_args: dict, nll_over: Callable[[list[ExampleSet], str], tuple[float, int]]) -> dict:
    """{"true", "shuffled", "ratio"}; `true_nll` is the (nll, tokens) already measured with true personas."""
    movie_split = corpus.split_of_movies(**split_args)
    indices = [i for i, c in enumerate(corpus.conversations) if movie_split[c.movie_id] in splits]
    conditioning_of = shuffled_personas(corpus, indices, genres, config.seed)
    sets = [build_examples(corpus, tokenizer, s, max_length=config.max_length, genres=genres, persona=True,
                           conditioning_of=conditioning_of, **split_args) for s in splits]
    shuffled = nll_over(sets, "perplexity, shuffled personas")
    true_ppl, shuffled_ppl = perplexity(*true_nll), perplexity(*shuffled)
    return {"true": true_ppl, "shuffled": shuffled_ppl, "ratio": shuffled_ppl / true_ppl,
            "examples": sum(len(e) for e in sets)}
