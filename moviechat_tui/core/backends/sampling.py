"""Choosing the next token from logits, for backends that hand back logits step by step (llama.cpp).

The same transformers logits processors, in the same order, as `generate` runs on the transformers
backend (hf.py), with the same rules: the penalties count the reply's tokens only, the first token
never ends the turn, a reply that is still blank can't end. With equal logits and seed, a sampled
reply is the transformers backend's reply.
"""

from __future__ import annotations

from typing import Sequence


class NextToken:
    """Picks each next token of one reply; `pick(logits, reply)` with the reply's ids so far."""

    def __init__(self, settings, tokenizer, end_of_turn_id: int) -> None:
        import torch
        from transformers import (
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch, self.tokenizer, self.eot = torch, tokenizer, end_of_turn_id
        self.sample = settings.temperature > 0
        self.penalties = []  # (processor), run over the reply's ids only
        if settings.repetition_penalty != 1.0:
            self.penalties.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        if settings.no_repeat_ngram_size > 0:
            self.penalties.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
        self.warpers = []
        if self.sample:
            if settings.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k:
                self.warpers.append(TopKLogitsWarper(top_k=settings.top_k))
            if settings.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=settings.top_p))
        self.has_text = False  # once the reply has text it stays non-blank

    def pick(self, logits, reply: Sequence[int]) -> int:
        """`logits`: the next-token scores (a float32 torch tensor of the vocabulary's size; changed in place)."""
        torch = self.torch
        scores = logits.view(1, -1)
        ids = torch.tensor([list(reply)], dtype=torch.long) if self.penalties or self.warpers else None
        if reply:
            for processor in self.penalties:
                scores = processor(ids, scores)
        if not self.has_text:
            self.has_text = bool(reply) and bool(self.tokenizer.decode(list(reply), skip_special_tokens=True).strip())
            if not self.has_text:  # the first token, or only whitespace so far: the turn can't end yet
                scores[:, self.eot] = -float("inf")
        if not self.sample:
            return int(scores.argmax(-1))
        for warper in self.warpers:
            scores = warper(ids, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1))
