"""The transformers backend: `generate` with the KV cache on, on whatever device the model is.

It is always there: the fallback when no faster copy can be made, the path on GPUs, and what a
model changed in memory (trained further, instrumented with hooks) is generated from. The rules
match the CTranslate2 backend's: penalties count the reply's tokens only, a blank reply can't end.

Read-ahead: `warm(prefix)` keeps the KV cache after a prompt's known beginning (PREFIX_STATES of
them, the latest conversations'), and `generate` continues from a copy of the longest that fits.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Sequence

from . import MIN_PREFIX_TOKENS, longest_prefix

PREFIX_STATES = 2  # KV caches kept warmed (the latest conversations')
_DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


class TransformersBackend:
    def __init__(self, model: Callable[[], object], tokenizer, context_window: int) -> None:
        """`model` returns the transformers model (called when needed: it may load on first use)."""
        self._model, self.tokenizer, self.context_window = model, tokenizer, context_window
        # Prefix ids -> KV cache after them, oldest first.
        self.prefix_states: dict[tuple[int, ...], object] = {}
        self.prefix_hits = 0

    @property
    def model(self):
        return self._model()

    @property
    def name(self) -> str:
        return f"transformers-{_DTYPE_NAMES.get(str(getattr(self.model, 'dtype', '')), 'fp32')}"

    def clear_prefixes(self) -> None:
        self.prefix_states.clear()

    def warm(self, prefix_ids: Sequence[int]) -> bool:
        import torch

        key = tuple(prefix_ids)
        if len(key) < MIN_PREFIX_TOKENS or len(key) + 1 > self.context_window:
            return False
        if key in self.prefix_states:
            self.prefix_states[key] = self.prefix_states.pop(key)  # most recent last
            return False
        model = self.model
        with torch.inference_mode():
            state = model(input_ids=torch.tensor([list(key)], device=model.device), use_cache=True).past_key_values
        self.prefix_states[key] = state
        while len(self.prefix_states) > PREFIX_STATES:
            self.prefix_states.pop(next(iter(self.prefix_states)))
        return True

    def logits(self, ids: Sequence[int]):
        import torch

        model = self.model
        with torch.inference_mode():
            return model(torch.tensor([list(ids)], device=model.device)).logits[0].float()

    def generate(self, ids: Sequence[int], settings, on_token: Callable[[int], None],
                 cancelled: Callable[[], bool], end_of_turn_id: int) -> list[int]:
        import torch
        from transformers import (
            LogitsProcessorList,
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            StoppingCriteria,
            StoppingCriteriaList,
        )
        from transformers.generation.streamers import BaseStreamer

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled()

        class Tokens(BaseStreamer):
            """Passes each new token on (generate's first call carries the prompt)."""

            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    on_token(token)

            def end(self):
                pass

        model, tokenizer = self.model, self.tokenizer
        n_prompt = len(ids)
        input_ids = torch.tensor([list(ids)], device=model.device)
        config = generation_config(settings, end_of_turn_id, tokenizer.pad_token_id)
        # The penalties look at the reply only, not the whole history (which holds every earlier
        # end-of-turn token and reply opening), as CTranslate2 applies them.
        config.repetition_penalty, config.no_repeat_ngram_size = 1.0, 0
        processors = [_NoBlankReply(tokenizer, end_of_turn_id, n_prompt)]
        if settings.repetition_penalty != 1.0:
            processors.insert(0, _OnReply(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty), n_prompt))
        if settings.no_repeat_ngram_size > 0:
            processors.insert(-1, _OnReply(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size), n_prompt))
        with torch.inference_mode():
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            start = {}
            cached = longest_prefix(self.prefix_states, ids)
            if cached:  # continue from the warmed state; a copy, since generate extends it in place
                start[cache_keyword(model)] = copy.deepcopy(self.prefix_states[tuple(ids[:cached])])
                self.prefix_hits += 1
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                streamer=Tokens(),
                stopping_criteria=StoppingCriteriaList([Stop()]),
                logits_processor=LogitsProcessorList(processors),
                **start,
            )
        return output[0, n_prompt:].tolist()


def generation_config(settings, end_of_turn_id: int, pad_token_id: int):
    """`settings` (a GenerationSettings) as a transformers GenerationConfig."""
    from transformers import GenerationConfig

    sample = settings.temperature > 0
    return GenerationConfig(
        do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_p=settings.top_p if sample else None,
        top_k=settings.top_k if sample else None,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=1,  # the first token never ends the turn
        eos_token_id=end_of_turn_id,
        pad_token_id=pad_token_id,
        use_cache=True,
    )


def cache_keyword(model) -> str:
    """`cache` in newer transformers (where `past_key_values` is deprecated), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


class _OnReply:
    """Run a logits processor over the reply's tokens only."""

    def __init__(self, processor, prompt_length: int) -> None:
        self.processor, self.start = processor, prompt_length

    def __call__(self, input_ids, scores):
        return self.processor(input_ids[:, self.start:], scores)


class _NoBlankReply:
    """Forbid ending the turn while the reply is still only whitespace."""

    def __init__(self, tokenizer, end_of_turn_id: int, prompt_length: int) -> None:
        self.tokenizer, self.eot, self.start = tokenizer, end_of_turn_id, prompt_length
        self.has_text = False  # once the reply has text it stays non-blank: stop decoding

    def __call__(self, input_ids, scores):
        if not self.has_text:
            generated = input_ids[0, self.start:]
            self.has_text = bool(self.tokenizer.decode(generated, skip_special_tokens=True).strip())
            if not self.has_text:
                scores[:, self.eot] = -float("inf")
        return scores
