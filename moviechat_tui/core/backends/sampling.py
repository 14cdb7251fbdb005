"""Choosing the next token from logits, for backends that hand back logits step by step (llama.cpp).

The same transformers logits processors, in the same order, as `generate` runs on the transformers
backend (hf.py), with the same rules: the penalties count the reply's tokens only, the first token
never ends the turn, a reply that is still blank can't end.

With a top-k cut (the default, 50) the warpers and the draw run on the k candidates instead of the
whole vocabulary: top-k keeps only them, and temperature and top-p over the rest of the (then -inf)
scores change nothing, so the distribution is the same; but top-p's sort of 49k scores and the draw
over them took ~5 ms a token, half the time of a decode step. The random numbers are drawn
differently, so a seed reproduces replies per backend, as on CTranslate2. Greedy decoding and
sampling without a top-k cut follow transformers exactly (with equal logits and seed, the same reply).
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
            TopPLogitsWarper,
        )

        self.torch, self.tokenizer, self.eot = torch, tokenizer, end_of_turn_id
        self.sample = settings.temperature > 0
        self.penalties = []  # (processor), run over the reply's ids only
        if settings.repetition_penalty != 1.0:
            self.penalties.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        if settings.no_repeat_ngram_size > 0:
            self.penalties.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
        self.warpers = []  # run on the top-k candidates when there is a top-k cut (see above)
        self.top_k = settings.top_k if self.sample else 0
        if self.sample:
            if settings.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=settings.top_p))
        self.has_text = False  # once the reply has text it stays non-blank

    def pick(self, logits, reply: Sequence[int]) -> int:
        """`logits`: the next-token scores (a float32 torch tensor of the vocabulary's size; changed in place)."""
        torch = self.torch
        threads = torch.get_num_threads()
        if threads == 1:
            return self._pick(logits, reply)
        # One torch thread while picking: a copy of 49k scores (in the repetition penalty) is big enough
        # for torch to use its OpenMP pool, whose threads then spin on the cores llama.cpp decodes on
        # (default settings decoded at 55 instead of 107 tokens/s). torch's setting is process-wide,
        # so it is restored at once (~0.3 ms later).
        torch.set_num_threads(1)
        try:
            return self._pick(logits, reply)
        finally:
            torch.set_num_threads(threads)

    def _pick(self, logits, reply: Sequence[int]) -> int:
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
        candidates = None
        if self.top_k:  # only the k best can be drawn: warp and draw among them
            scores, candidates = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1)
        for warper in self.warpers:
            scores = warper(ids, scores)
        choice = int(torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1))
        return choice if candidates is None else int(candidates[0, choice])
