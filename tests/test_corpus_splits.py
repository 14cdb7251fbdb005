"""Movie-level splits: deterministic, order-free, stable as movies are added, never empty."""

from __future__ import annotations

import random

import pytest

from trainer.splits import split_movies


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"m{i}" for i in range(start, start + n)]


def test_same_split_whatever_the_order():
    ids = _ids(200)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert split_movies(ids) == split_movies(shuffled)


def test_adding_movies_moves_no_existing_movie():
    before = split_movies(_ids(300))
    after = split_movies(_ids(300) + _ids(300, start=1000))
    assert {m: after[m] for m in before} == before


def test_ratios_are_shares_of_movies():
    counts = {"train": 0, "validation": 0, "test": 0}
    for split in split_movies(_ids(20000), (0.8, 0.1, 0.1)).values():
        counts[split] += 1
    assert abs(counts["train"] / 20000 - 0.8) < 0.02
    assert abs(counts["validation"] / 20000 - 0.1) < 0.02
    assert abs(counts["test"] / 20000 - 0.1) < 0.02


@pytest.mark.parametrize("n", range(3, 61))
def test_validation_and_test_never_empty_from_three_movies(n):
    splits = set(split_movies(_ids(n)).values())
    assert splits == {"train", "validation", "test"}


def test_zero_ratio_means_empty_and_salt_reshuffles():
    assert set(split_movies(_ids(50), (0.9, 0.1, 0.0)).values()) == {"train", "validation"}
    assert split_movies(_ids(50), salt="a") != split_movies(_ids(50), salt="b")


@pytest.mark.parametrize("ratios", [(0.9, 0.1), (1, -1, 1), (0, 0, 0)])
def test_bad_ratios_are_refused(ratios):
    with pytest.raises(ValueError, match="ratios"):
        split_movies(_ids(5), ratios)
