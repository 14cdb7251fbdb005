"""Examples into batches: length-bucketed batch order, padding, and what bucketing saves.

    loader = DataLoader(examples, batch_sampler=LengthBucketSampler(examples.lengths, 16, seed=0),
                        collate_fn=Collator(examples.pad_id))

Examples vary from a dozen tokens to `max_length`; batched at random, most of
each batch is padding. Batching examples of similar length cuts that padding
(`padding_fraction` of `LengthBucketSampler`'s batches vs `random_batches`).
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from moviechat_tui.core.dialogue import IGNORE_INDEX


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length examples, in a random order that depends only on seed and epoch.

    Indices are shuffled, cut into pools of `batch_size * pool_batches`, each
    pool sorted by length and cut into batches, then all batches shuffled. Use
    as `DataLoader(..., batch_sampler=sampler)`; call `set_epoch(n)` for a new
    order each epoch.

    `largest_first` moves the batch with the most tokens (rows x longest row) to
    the front, so that a run that does not fit in memory fails in its first step,
    not hours in, and the run's peak memory shows at once.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 pool_batches: int = 50, drop_last: bool = False, largest_first: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.pool_batches, self.drop_last, self.epoch = pool_batches, drop_last, 0
        self.largest_first = largest_first

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        else:
            order.sort(key=self.lengths.__getitem__)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            rng.shuffle(batches)
        if self.largest_first and batches:
            cost = lambda batch: len(batch) * max(self.lengths[i] for i in batch)  # noqa: E731
            batches.insert(0, batches.pop(max(range(len(batches)), key=lambda k: cost(batches[k]))))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        if self.drop_last:
            pool = self.batch_size * self.pool_batches
            return sum((min(pool, n - s)) // self.batch_size for s in range(0, n, pool))
        pool = self.batch_size * self.pool_batches
        return sum(-(-min(pool, n - s) // self.batch_size) for s in range(0, n, pool))


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain shuffled batches: the baseline that bucketing is measured against."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Padding tokens / all tokens when each batch is padded to its longest example."""
    real = padded = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        real += sum(sizes)
        padded += max(sizes, default=0) * len(sizes)
    return 0.0 if padded == 0 else 1 - real / padded


class Collator:
    """Pads a list of examples on the right: input_ids with pad_id, labels with -100, attention_mask 1/0."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id, self.pad_to_multiple_of = int(pad_id), pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
