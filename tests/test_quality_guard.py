"""The quality guard (core/backends/quality.py): everyday replies and replies that use the history,
measured apart, and a faster copy kept only while both hold."""

from __future__ import annotations

import torch

from moviechat_tui.core.backends import quality
from moviechat_tui.core.backends.quality import (
    QUALITY_LIMIT_PCT,
    compare,
    context_calibration,
    guard_metadata,
    guard_note,
)
from moviechat_tui.core.cast import fold
from moviechat_tui.core.loading import load_model
from trainer import recall
from trainer.probes import probe_template_strings, probe_values

_FILLER_WORDS = {"a", "an", "the", "in", "at", "on", "of", "my", "by"}


def test_each_context_reply_names_what_only_the_users_first_line_said():
    exchanges = context_calibration()
    assert len(exchanges) == 2 * len(quality.CONTEXT_FACTS)
    for context, reply in exchanges:
        assert len(context) % 2 == 1  # the first line is the user's (roles alternate back from the question)
        named = set(fold(reply).split()) - _FILLER_WORDS
        later = set(fold(" ".join(context[1:])).split())
        assert any(word in fold(context[0]).split() and word not in later for word in named), (context, reply)
    gaps = {(len(context) - 3) // 2 for context, _ in exchanges}
    assert gaps == {0, 1, 2, 3}  # 0-3 exchanges of small talk between the fact and the question


def test_the_context_check_shares_no_sentence_or_value_with_the_probes_or_training():
    ours = {fold(line) for context, reply in context_calibration() for line in (*context, reply)}
    assert not ours & {fold(s) for s in probe_template_strings()}
    words = set(" ".join(ours).split())
    assert not words & {fold(v) for v in probe_values()}
    assert not words & {fold(v) for kind in recall.FACT_KINDS.values() for v in kind.values}


class _LosesTheHistory:
    """The reference's scores with noise added wherever the prompt is a context exchange."""

    def __init__(self, reference, fmt):
        self.reference = reference
        self.context_ids = {tuple(ids) for ids, _ in quality.context_prompts(fmt)}

    def logits(self, ids):
        scores = self.reference.logits(ids)
        if tuple(ids) not in self.context_ids:
            return scores
        return scores + 3 * torch.randn(scores.shape, generator=torch.Generator().manual_seed(len(ids)))


def test_a_copy_that_loses_the_history_fails_though_everyday_replies_hold(tiny_gpt2_dir):
    plain = load_model(str(tiny_gpt2_dir), backend="transformers")
    same = compare(plain.backend, plain.backend, plain.format)
    assert same.change_pct == 0 and same.context_change_pct == 0 and same.passes
    assert same.context_prompts == len(context_calibration()) and same.context_reply_tokens > same.context_prompts

    forgetful = compare(plain.backend, _LosesTheHistory(plain.backend, plain.format), plain.format)
    assert forgetful.change_pct == 0 and forgetful.context_change_pct > QUALITY_LIMIT_PCT
    assert not forgetful.passes and forgetful.worst_change_pct == forgetful.context_change_pct


def test_a_short_window_leaves_out_the_exchanges_that_do_not_fit(tiny_gpt2_dir):
    plain = load_model(str(tiny_gpt2_dir), backend="transformers")
    lengths = [len(ids) for ids, _ in quality.context_prompts(plain.format)]
    window = sorted(lengths)[len(lengths) // 2]
    short = compare(plain.backend, plain.backend, plain.format, max_tokens=window)
    assert short.context_prompts == sum(n <= window for n in lengths) < len(lengths)
    nothing = compare(plain.backend, plain.backend, plain.format, max_tokens=1)
    assert nothing.prompts == nothing.context_prompts == 0 and nothing.passes
    # Kept with a copy as "not measured", not as "no change".
    assert guard_metadata(nothing, "q8_0") == {"perplexity_change_pct_q8_0": None, "context_change_pct_q8_0": None}
    assert guard_metadata(short, "q8_0") == {"perplexity_change_pct_q8_0": 0.0, "context_change_pct_q8_0": 0.0}


def test_the_note_names_each_measure_a_faster_copy_failed():
    figures = {"perplexity_change_pct_q8_0": 0.2, "context_change_pct_q8_0": 0.8,
               "perplexity_change_pct_mix-4bit-most": 2.5, "context_change_pct_mix-4bit-most": 4.7,
               "perplexity_change_pct_mix-4bit-half": 0.0, "context_change_pct_mix-4bit-half": 3.8}
    assert guard_note(figures, "q8_0") == (
        "raised reply perplexity: mix-4bit-most by 2.5%; raised the perplexity of replies that use the history:"
        " mix-4bit-most by 4.7%, mix-4bit-half by 3.8% (limit 2%): q8_0 instead")
    assert guard_note({"perplexity_change_pct_q8_0": 0.2, "context_change_pct_q8_0": 0.8}, "q8_0") == ""
    # The last resort past the limit too (auto): both said; a copy measured alone was asked for by name.
    assert guard_note({"context_change_pct_int8": 3.0, "context_change_pct_float32": 2.5}, "float32") == (
        "raised the perplexity of replies that use the history: int8 by 3.0% (limit 2%): float32 instead;"
        " float32 itself raises the perplexity of replies that use the history by 2.5%")
    assert guard_note({"context_change_pct_q4_0": 9.0, "context_change_pct_x": None}, "q4_0") == (
        "q4_0, as asked, raises the perplexity of replies that use the history by 9.0% (the guard's limit is 2%)")
