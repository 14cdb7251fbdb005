"""moviechat-train train on a tiny GPT-2 and the mini corpus: learning, loss masking, resume, run dirs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from moviechat_tui.core.dialogue import IGNORE_INDEX
from trainer.config import TrainConfig, TrainError
from trainer.train import TrainingInterrupted, train

CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"


def tiny_config(base, out, **changes) -> TrainConfig:
    settings = dict(base=str(base), corpus=str(CORNELL_MINI), out=str(out), max_length=64, batch_size=2,
                    learning_rate=3e-3, max_steps=6, eval_steps=3, logging_steps=1, eval_examples=0,
                    patience=0, progress=False, seed=0)
    settings.update(changes)
    return TrainConfig(**settings)


def logged(out: Path, key: str = "loss") -> dict[int, float]:
    records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def quiet(*args, **kwargs):
    pass


def test_loss_decreases_and_the_run_dir_is_a_model(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(tiny_gpt2_dir, out, max_steps=12, eval_steps=6), log=quiet)
    losses = logged(out)
    assert len(losses) == 12
    first, last = [losses[s] for s in (1, 2, 3)], [losses[s] for s in (10, 11, 12)]
    assert sum(last) / 3 < sum(first) / 3 - 0.5

    meta = json.loads((out / "moviechat_run.json").read_text())
    assert meta["status"] == "complete" and meta["adapter"] is False and meta["base"] == str(tiny_gpt2_dir)
    assert meta["settings"]["seed"] == 0 and meta["corpus_hash"] and meta["packages"]["torch"]
    assert meta["metrics"]["eval_loss"] == pytest.approx(min(logged(out, "eval_loss").values()), abs=1e-3)
    assert meta["peak_memory_gb"] > 0 and (out / "loss.png").stat().st_size > 0

    # moviechat-tui --model DIR: the run directory loads as a model spec and talks.
    from moviechat_tui.core.dialogue import Turn
    from moviechat_tui.core.generation import GenerationSettings, stream_reply
    from moviechat_tui.core.loading import load_model

    loaded = load_model(str(out))
    for name, value in result.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name].cpu(), value.cpu()), name
    stream = stream_reply(loaded, loaded.format.prompt_ids([Turn("user", "Hello.")]),
                          GenerationSettings(temperature=0, max_new_tokens=5))
    text = "".join(stream)
    assert stream.finish_reason in ("end_of_turn", "length") and stream.stats.new_tokens > 0 and text == stream.text


def test_only_reply_tokens_count_in_the_loss(tiny_gpt2_dir, gpt2_tokenizer):
    from transformers import AutoModelForCausalLM

    from trainer.batching import Collator
    from trainer.corpus import load_corpus
    from trainer.dataset import build_examples

    examples = build_examples(load_corpus(CORNELL_MINI), gpt2_tokenizer, "train", max_length=64, genres=True)
    batch = Collator(examples.pad_id)([examples[i] for i in range(4)])
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    # By hand: mean NLL of each reply token given everything before it; prompt and padding excluded.
    nll, count = 0.0, 0
    for row in range(4):
        prompt = sum(1 for label in examples[row]["labels"] if label == IGNORE_INDEX)
        ids = examples[row]["input_ids"]
        assert prompt > 0 and len(ids) > prompt
        log_probs = torch.log_softmax(logits[row].double(), dim=-1)
        for position in range(prompt, len(ids)):
            nll -= log_probs[position - 1, ids[position]].item()
            count += 1
    assert loss.item() == pytest.approx(nll / count, rel=1e-5)
    assert (batch["labels"] != IGNORE_INDEX).sum().item() == count


class KillAfter(TrainerCallback):
    """Stand-in for `kill -9`: stop dead right after `step` (after its checkpoint), writing nothing more."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SystemExit("killed")


def test_resume_after_a_kill_continues_exactly(tiny_gpt2_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(tiny_config(tiny_gpt2_dir, whole), log=quiet)
    with pytest.raises(SystemExit):
        train(tiny_config(tiny_gpt2_dir, killed, patience=5), log=quiet, callbacks=[KillAfter(3)])
    assert (killed / "checkpoint-3").is_dir() and not (killed / "checkpoint-6").exists()
    (killed / ".staging" / "checkpoint-4").mkdir(parents=True)  # a save cut short: must be ignored

    # The run's own settings are used: only --out and --resume are needed; early stopping may change.
    resume = TrainConfig(out=str(killed), resume=True, progress=False)
    with pytest.raises(TrainError, match="a resumed run keeps its learning_rate"):
        train(resume, log=quiet, changes={"learning_rate": 1.0, "patience": 0})
    train(resume, log=quiet, changes={"patience": 0})
    expected, resumed = logged(whole), logged(killed)
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-5), step
    meta = json.loads((killed / "moviechat_run.json").read_text())
    assert meta["status"] == "complete" and meta["metrics"]["global_step"] == 6
    assert meta["settings"]["patience"] == 0


def test_ctrl_c_saves_a_checkpoint_then_stops(tiny_gpt2_dir, tmp_path):
    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(tiny_config(tiny_gpt2_dir, out, max_steps=20, eval_steps=10), log=quiet, callbacks=[CtrlC()])
    # Ctrl-C lands during a step: that step ends, is checkpointed, and training stops.
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]
    assert (out / "checkpoint-3" / "model.safetensors").is_file()
    assert json.loads((out / "moviechat_run.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C behaves normally again


def test_refuses_another_runs_dir_and_a_corrupt_checkpoint(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(tiny_config(tiny_gpt2_dir, out), log=quiet, callbacks=[KillAfter(3)])
    with pytest.raises(TrainError, match="already holds a training run"):
        train(tiny_config(tiny_gpt2_dir, out), log=quiet)
    weights = out / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TrainError, match="checkpoint-3 is corrupt"):
        train(TrainConfig(out=str(out), resume=True, progress=False), log=quiet)
    assert (out / "checkpoint-3").is_dir()  # nothing deleted


def test_lora_run_loads_on_its_base(tiny_gpt2_dir, tmp_path):
    from moviechat_tui.core.loading import load_model

    out = tmp_path / "lora"
    train(tiny_config(tiny_gpt2_dir, out, lora=True, lora_targets="c_attn", max_steps=2, eval_steps=2), log=quiet)
    meta = json.loads((out / "moviechat_run.json").read_text())
    assert meta["adapter"] is True and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    loaded = load_model(str(out))
    base = load_model(str(tiny_gpt2_dir))
    changed = [n for n, p in loaded.model.state_dict().items() if not torch.equal(p, base.model.state_dict()[n])]
    assert changed and all("c_attn" in n for n in changed)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from trainer.cli import main

    assert main(["train", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing")]) == 2
    assert main(["train", "--out", str(tmp_path / "x"), "--corpus", str(CORNELL_MINI), "--base", str(tmp_path / "nope")]) == 2
    assert main(["train", "--out", str(tmp_path / "x"), "--corpus", str(CORNELL_MINI), "--base", "gpt2-scratch",
                 "--max-memory", "100MB", "--no-progress"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "no corpus" in errors[0] and "cannot load base" in errors[1] and "too small" in errors[2]


def test_an_interrupted_run_exports_its_best_checkpoint(tiny_gpt2_dir, tmp_path):
    from moviechat_tui.core.loading import load_model
    from trainer.run_dir import export_checkpoint

    out, dest = tmp_path / "run", tmp_path / "exported"
    with pytest.raises(SystemExit):
        train(tiny_config(tiny_gpt2_dir, out, max_steps=9), log=quiet, callbacks=[KillAfter(6)])
    best = min(logged(out, "eval_loss").items(), key=lambda item: item[1])
    meta = export_checkpoint(out, dest)
    assert meta["metrics"]["global_step"] == best[0] and meta["metrics"]["eval_loss"] == pytest.approx(best[1], abs=1e-4)
    assert meta["exported_from"] == f"run/checkpoint-{best[0]}" and not (dest / "optimizer.pt").exists()
    assert load_model(str(dest)).model.config.n_layer == 2
