"""Train/validation/test split by movie, decided by a hash of the movie id.

A movie's split depends only on its id (and the salt), never on list order or
on which other movies exist, so re-runs agree and adding movies moves no
existing movie. Every line of a movie lands in one split: the model is scored
on films it has never seen.

One exception keeps small corpora usable: when a split with a non-zero ratio
would be empty and there are enough movies, the movie whose hash lies nearest
that split's range is moved into it (from the largest split). That choice is
deterministic too.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.90, 0.05, 0.05)
DEFAULT_SALT = "moviechat-split-v1"


def movie_position(movie_id: str, salt: str = DEFAULT_SALT) -> float:
    """Where a movie falls in [0, 1): the first 8 bytes of SHA-256(salt:id)."""
    digest = hashlib.sha256(f"{salt}:{movie_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be {len(SPLITS)} non-negative numbers (train, validation, test), got {ratios}")
    total = sum(ratios)
    return tuple(r / total for r in ratios)


def split_movies(
    movie_ids: Iterable[str],
    ratios: Iterable[float] = DEFAULT_RATIOS,
    salt: str = DEFAULT_SALT,
) -> dict[str, str]:
    """Map each movie id to "train", "validation" or "test".

    `ratios` are the shares of movies (normalised to sum to 1). Validation and
    test are never empty when their ratio is > 0 and there are at least as many
    movies as non-empty ratios (3 with the defaults).
    """
    ratios = _check_ratios(ratios)
    bounds, low = [], 0.0
    for ratio in ratios:
        bounds.append((low, low + ratio))
        low += ratio
    position = {movie: movie_position(movie, salt) for movie in set(movie_ids)}

    def natural_split(x: float) -> int:
        for index, (lo, hi) in enumerate(bounds):
            if ratios[index] > 0 and x < hi:
                return index
        return max(i for i, r in enumerate(ratios) if r > 0)  # x rounding into the top end

    assignment = {movie: natural_split(x) for movie, x in position.items()}
    wanted = [i for i, r in enumerate(ratios) if r > 0]
    if len(position) >= len(wanted):
        for index in wanted:
            members = [m for m, s in assignment.items() if s == index]
            if members:
                continue
            counts = {s: sum(1 for v in assignment.values() if v == s) for s in wanted}
            donor = max(wanted, key=lambda s: (counts[s], -s))
            lo, hi = bounds[index]
            candidates = [m for m, s in assignment.items() if s == donor]
            nearest = min(candidates, key=lambda m: (_distance(position[m], lo, hi), m))
            assignment[nearest] = index
    return {movie: SPLITS[index] for movie, index in sorted(assignment.items())}


def _distance(x: float, lo: float, hi: float) -> float:
    """Distance from x to [lo, hi) on the unit circle (so 0.99 is near 0.0)."""
    if lo <= x < hi:
        return 0.0
    return min(min(d, 1 - d) for d in (abs(x - lo), abs(x - hi)))
