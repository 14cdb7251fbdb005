"""Context probes: the set, its independence from the training templates, and the scoring."""

import re

import pytest
import torch

from moviechat_tui.core.dialogue import USER
from moviechat_tui.core.loading import load_model
from trainer import recall
from trainer.probes import DISTANCES, build_probes, forced_choice, names_fact, probe_template_strings, probe_values, run_probes


def test_sixty_plus_probes_with_facts_one_to_four_exchanges_back_and_own_name_questions():
    probes = build_probes()
    facts = [p for p in probes if p.kind != "own_name"]
    assert len(probes) >= 60 and len(facts) >= 60
    assert {p.kind for p in facts} == {"name", "city", "job", "object", "cat"}
    for probe in facts:
        user_turns = [t for t in probe.turns if t.role == USER]
        assert probe.value in user_turns[0].text  # stated in the first turn ...
        assert len(user_turns) - 1 == probe.distance  # ... `distance` exchanges before the question
        assert all(probe.value not in t.text for t in probe.turns[1:])  # and nowhere else
        assert probe.candidates[0].rstrip(".").endswith(probe.value) and len(set(probe.candidates)) == 4
    assert {p.distance for p in facts} == set(DISTANCES)
    own = [p for p in probes if p.kind == "own_name"]
    assert len(own) >= 10 and all(p.value == p.conditioning.character for p in own)
    assert build_probes() == probes  # fixed for a seed


def _normalised(sentence: str) -> str:
    return re.sub(r"\{v\}", "", re.sub(r"[^\w{}]+", " ", sentence.lower())).strip()


def test_probes_share_no_sentence_and_no_value_with_the_training_recall_exchanges():
    training = {s for kind in recall.FACT_KINDS.values() for s in (*kind.statements, *kind.questions, *kind.answers)}
    training |= set(recall.ACKNOWLEDGEMENTS) | set(recall.OWN_NAME_QUESTIONS) | set(recall.OWN_NAME_ANSWERS)
    assert not {_normalised(s) for s in training} & {_normalised(s) for s in probe_template_strings()}
    training_values = {v.lower() for kind in recall.FACT_KINDS.values() for v in kind.values}
    assert not training_values & {v.lower() for v in probe_values()}


def test_a_reply_names_the_fact_by_its_word_not_a_substring():
    probe = next(p for p in build_probes() if p.kind == "city" and p.value == "Omaha") if any(
        p.value == "Omaha" for p in build_probes()) else next(p for p in build_probes() if p.kind == "city")
    assert names_fact(f"You live in {probe.value}, don't you?", probe)
    assert names_fact(f"{probe.value.upper()}!", probe)
    assert not names_fact("I have no idea.", probe)
    assert not names_fact(f"{probe.value}ville", probe)
    own = next(p for p in build_probes() if p.kind == "own_name")
    assert names_fact(f"Call me {own.value}.", own)


@pytest.fixture(scope="module")
def tiny(tiny_chatml_dir):
    return load_model(str(tiny_chatml_dir), backend="transformers")


def test_forced_choice_picks_the_candidate_with_the_highest_likelihood(tiny):
    probe = build_probes()[0]
    fmt, model = tiny.format, tiny.model
    from moviechat_tui.core.dialogue import fit_prompt

    prompt = fit_prompt(fmt, probe.turns, 768, probe.conditioning).ids
    totals = []
    for candidate in probe.candidates:  # the model's own loss over the reply tokens, summed
        ids = torch.tensor([prompt + fmt.reply_ids(candidate)])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        with torch.no_grad():
            totals.append(-model(input_ids=ids, labels=labels).loss.item() * (ids.shape[1] - len(prompt)))
    assert forced_choice(tiny, probe) == max(range(4), key=totals.__getitem__)


def test_run_probes_counts_replies_that_name_the_fact(tiny):
    naming = lambda probe, seed: f"It's {probe.value}." if seed % 2 == 0 else "No idea."  # noqa: E731
    probes = build_probes()[::4]  # every kind, every distance, some own-name probes
    report = run_probes(tiny, seeds=2, sampler=naming, probes=probes)
    assert report["recall"] == pytest.approx(0.5) and report["own_name"] == pytest.approx(0.5)
    assert report["probes"] == len(probes) and 0 <= report["forced_choice"] <= 1
    assert set(report["by_distance"]) == set(DISTANCES)
    always = run_probes(tiny, seeds=1, sampler=lambda probe, seed: probe.value, probes=probes)
    assert always["recall"] == 1.0 and always["by_kind"]["cat"]["recall"] == 1.0


def test_replies_are_sampled_like_the_chat_engine(tiny):
    from moviechat_tui.core.generation import GenerationSettings
    from trainer.probes import engine_sampler

    probes = build_probes()[::12]
    sampler = engine_sampler(tiny, GenerationSettings(max_new_tokens=6))
    report = run_probes(tiny, seeds=1, sampler=sampler, probes=probes)  # real generation on the tiny model
    assert report["probes"] == len(probes) == 6
    assert report["rows"][0]["replies"] == [sampler(probes[0], 0)]  # seeded: the same reply again
    assert all(len(r["replies"]) == 1 and isinstance(r["replies"][0], str) for r in report["rows"])
