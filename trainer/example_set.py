"""One split's training examples as a torch Dataset, stored flat, and its files on disk.

An ExampleSet holds a split in four arrays: every example's token ids end to end
(int32), the offset where each starts, each one's prompt length, and where each
came from. Saved as .npy files and memory-mapped back, even the full corpus costs
little RAM and loads in well under a second. `trainer.dataset` builds the sets and
decides where on disk they are cached.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from functools import cached_property
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from moviechat_tui.core.dialogue import IGNORE_INDEX
from trainer.batching import LengthBucketSampler, padding_fraction, random_batches

ARRAYS = ("ids", "offsets", "prompt_lengths", "sources")  # one .npy file each, per split


class ExampleSet(Dataset):
    """One split's examples: a torch Dataset of {"input_ids": [...], "labels": [...]}.

    Stored flat (int32 ids + offsets + prompt lengths), memory-mapped from the
    cache, so even the full corpus costs little RAM.
    `sources[i]` is (index into corpus.conversations, index of the reply turn).
    """

    def __init__(self, split, ids, offsets, prompt_lengths, sources, pad_id, skipped=None, truncated=0) -> None:
        self.split = split
        self.ids, self.offsets, self.prompt_lengths, self.sources = ids, offsets, prompt_lengths, sources
        self.pad_id = int(pad_id)
        self.skipped = Counter(skipped or {})  # reason -> replies not turned into examples
        self.truncated = int(truncated)  # examples whose context lost its oldest turns

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} out of range ({len(self)} examples)")
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        input_ids = self.ids[start:end].tolist()
        prompt = int(self.prompt_lengths[index])
        return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * prompt + input_ids[prompt:]}

    @cached_property
    def lengths(self) -> list[int]:
        """Tokens per example (what the bucketing sampler sorts by)."""
        return np.diff(self.offsets).tolist()

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    @property
    def n_reply_tokens(self) -> int:
        return self.n_tokens - int(np.sum(self.prompt_lengths, dtype=np.int64))

    def padding_report(self, batch_size: int, seed: int = 0) -> dict[str, float]:
        """Share of padding tokens with length-bucketed vs. random batches of `batch_size`."""
        lengths = self.lengths
        return {
            "bucketed": padding_fraction(lengths, list(LengthBucketSampler(lengths, batch_size, seed=seed))),
            "random": padding_fraction(lengths, random_batches(len(lengths), batch_size, seed=seed)),
        }


def save_example_sets(directory: Path, sets: dict[str, ExampleSet], meta: dict) -> None:
    """Write each split's arrays and meta.json (`meta` + each split's counts) as `directory`, atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        meta = {**meta, "splits": {}}
        for split, examples in sets.items():
            for name in ARRAYS:
                np.save(staging / f"{split}.{name}.npy", getattr(examples, name))
            meta["splits"][split] = {
                "examples": len(examples),
                "pad_id": examples.pad_id,
                "skipped": dict(examples.skipped),
                "truncated": examples.truncated,
            }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(staging, directory)  # atomic: a half-written cache is never seen
        except OSError:
            if not (directory / "meta.json").is_file():  # another process finishing first is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_example_set(directory: Path, split: str) -> ExampleSet:
    """One split of a directory written by `save_example_sets`, memory-mapped."""
    meta = json.loads((directory / "meta.json").read_text())["splits"][split]
    arrays = {name: np.load(directory / f"{split}.{name}.npy", mmap_mode="r") for name in ARRAYS}
    return ExampleSet(split, pad_id=meta["pad_id"], skipped=meta["skipped"], truncated=meta["truncated"], **arrays)
