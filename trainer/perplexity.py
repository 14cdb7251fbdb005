"""Reply perplexity: exp(sum of reply-token NLL / reply tokens) over a set of training examples.

Only reply tokens are scored (labels -100 over the prompt, as in training), through the same
`reply_logits` as the training loss. Batched by length so padding is rare; padding never changes
the number (each token's loss only sees the tokens before it).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from moviechat_tui.core.dialogue import IGNORE_INDEX
from trainer.batching import Collator, LengthBucketSampler
from trainer.example_set import ExampleSet
from trainer.loss import reply_logits


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
    """exp(mean NLL per token); nan when there are no tokens."""
    return math.exp(nll / tokens) if tokens else float("nan")
