"""Every setting of a training run, as one plain dataclass (saved whole into moviechat_run.json),
and TrainError, what a run that cannot start or go on raises."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from trainer.splits import DEFAULT_RATIOS, DEFAULT_SALT


class TrainError(Exception):
    """A run that cannot start or continue (one line)."""


GPT2_SCRATCH = "gpt2-scratch"  # GPT-2 124M architecture, random init, bundled GPT-2 tokenizer


@dataclass
class TrainConfig:
    base: str = "gpt2"  # a model spec (see moviechat_tui.core.loading) or gpt2-scratch
    corpus: str | None = None  # corpus dir/zip; None = the cached official corpus
    out: str = "runs/latest"
    # what is trained
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # comma-separated module names, or peft's "all-linear"
    # data
    max_length: int = 256
    genres: bool = True  # condition on the movie's genres
    persona: bool = False  # condition on the bot's and the user's characters and the film
    persona_dropout: float = 0.15  # with persona: each part left out of a training prompt with this chance
    recall_share: float = 0.0  # synthetic recall exchanges per real training example (trainer.recall)
    length_balance: int = 0  # a training reply of w < N words is kept with chance w/N (0 = off)
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    salt: str = DEFAULT_SALT
    eval_examples: int = 500  # validation examples scored at each evaluation (0 = all)
    # optimisation
    batch_size: int = 16  # effective batch (examples per optimizer step)
    micro_batch: int | None = None  # None = chosen by the memory planner
    gradient_checkpointing: bool | None = None  # None = chosen by the memory planner
    max_memory: str = "16GB"
    learning_rate: float | None = None  # None = 5e-5 full fine-tune, 3e-4 LoRA
    weight_decay: float = 0.0
    kl_weight: float = 0.0  # LoRA only: + kl_weight x KL(base || tuned) at reply tokens, keeps the base's habits
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    seed: int = 0
    # bookkeeping
    eval_steps: int = 100  # also the checkpoint interval
    logging_steps: int = 10
    save_total_limit: int = 2  # checkpoints kept (the best is always kept too)
    patience: int = 3  # evaluations without improvement before stopping early (0 = never)
    resume: bool = False
    progress: bool = True

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (3e-4 if self.lora else 5e-5)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["learning_rate"] = self.lr
        data["ratios"] = list(self.ratios)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "ratios" in kwargs:
            kwargs["ratios"] = tuple(kwargs["ratios"])
        return cls(**kwargs)


NOT_RUN_SETTINGS = {"out", "resume", "progress"}  # may differ when a run is resumed
# Settings a resume may change: when the run stops early, not what it learns (same data, same schedule).
CHANGEABLE_ON_RESUME = {"patience"}


def differing_settings(asked: TrainConfig, saved: dict, flags: dict[str, str]) -> list[str]:
    """The given flags ({field: option string}) whose value in `asked` differs from the run's `saved`
    settings, each as 'FLAG VALUE (the run has SAVED)'."""
    run, wanted = TrainConfig.from_dict(saved).to_dict(), asked.to_dict()
    return [f"{flag} {wanted[name]} (the run has {run[name]})" for name, flag in flags.items()
            if name in run and name not in NOT_RUN_SETTINGS | CHANGEABLE_ON_RESUME
            and _differs(name, wanted[name], run[name])]


def _differs(name: str, asked, saved) -> bool:
    if name == "corpus" and asked is not None and saved is not None:  # one corpus, however it is spelled
        return Path(asked).expanduser().resolve() != Path(saved).expanduser().resolve()
    return asked != saved
