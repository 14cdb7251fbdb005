"""moviechat-train train --resume with flags: the run's saved settings win, and a flag the user gave
that differs from them is a one-line error naming it (argparse defaults do not count)."""

import json

import pytest

import trainer.train as train_module
from trainer.cli import main
from trainer.config import TrainConfig


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as train() leaves it, saved with settings that differ from the CLI defaults."""
    out = tmp_path / "run"
    out.mkdir()
    settings = TrainConfig(out=str(out), epochs=3.0, max_length=128, learning_rate=1e-4, genres=False, seed=7)
    (out / "moviechat_run.json").write_text(json.dumps({"settings": settings.to_dict(), "status": "interrupted"}))
    return out


@pytest.fixture
def trained(monkeypatch):
    """Stands in for train(): records the config it would have run with."""
    calls = []
    monkeypatch.setattr(train_module, "train", lambda config, changes: calls.append(changes))
    return calls


def resume(run_dir, *flags):
    return main(["train", "--out", str(run_dir), "--resume", *flags])


def test_no_flags_resumes_even_though_the_run_differs_from_the_defaults(run_dir, trained):
    assert resume(run_dir) == 0 and len(trained) == 1


def test_flags_equal_to_the_run_and_non_settings_are_fine(run_dir, trained):
    assert resume(run_dir, "--epochs", "3", "--lr", "1e-4", "--no-genres", "--seed", "7", "--no-progress") == 0
    assert len(trained) == 1


def test_differing_flags_are_named_in_one_line(run_dir, trained, capsys):
    assert resume(run_dir, "--epochs", "2", "--max-length", "128", "--lr", "0.001", "--lora") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --resume continues {run_dir} with its own settings")
    assert "--epochs 2.0 (the run has 3.0)" in line and "--lr 0.001 (the run has 0.0001)" in line
    assert "--lora True (the run has False)" in line and "--max-length" not in line
    assert trained == []


def test_a_flag_set_to_its_default_still_counts_when_the_run_differs(run_dir, trained, capsys):
    # --seed 0 is argparse's default, but the user typed it and the run was seeded with 7
    assert resume(run_dir, "--seed", "0") == 2
    assert "--seed 0 (the run has 7)" in capsys.readouterr().err
    assert trained == []


def test_the_same_corpus_spelled_another_way_is_the_same(run_dir, trained, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    meta = json.loads((run_dir / "moviechat_run.json").read_text())
    meta["settings"]["corpus"] = str(corpus)
    (run_dir / "moviechat_run.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    assert resume(run_dir, "--corpus", "corpus") == 0 and len(trained) == 1


def test_patience_may_change_on_resume_and_only_when_given(run_dir, trained):
    # when the run stops early is not what it learns: a long run can be resumed with early stopping off
    assert resume(run_dir, "--patience", "0", "--epochs", "3") == 0
    assert resume(run_dir) == 0
    assert trained == [{"patience": 0}, {}]
