"""Text metrics of sampled replies: distinct-1/2, mean length, empty and repeat rates.

Text is tokenised lower-cased into words (`\\w+` with inner apostrophes: "don't"
is one word) and single punctuation marks; distinct-n counts n-grams inside each
reply (never across replies) over all replies. A reply repeats an earlier turn
when its words (lower-cased, punctuation dropped) equal those of any earlier line
of its conversation.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

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
