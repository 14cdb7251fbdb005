"""Decoding settings, each described once: name, default, range, label and help.

`GenerationSettings` holds the values (stored with every conversation and reply); `DESCRIPTIONS`
(also `GenerationSettings.descriptions()`) says what each one is, and the interfaces build their
controls from it: the `chat` command's options (cli.py), the app's settings form (tui/screens.py)
and the web page's sidebar widgets (web/app.py). Validation reads the same ranges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class SettingsError(ValueError):
    """A decoding setting out of range; the message is one line."""


@dataclass(frozen=True)
class Setting:
    """One decoding setting: what it is called, what it may be, and how a control shows it."""

    name: str
    label: str  # short (it fits the app's 20-column form)
    help: str  # one line
    type: type  # int or float
    minimum: float | None = None  # None: no bound
    maximum: float | None = None
    exclusive_minimum: bool = False  # (minimum, ...] rather than [minimum, ...]
    optional: bool = False  # None is allowed (and means `blank`)
    blank: str = ""  # what None means, for a control left empty
    step: float = 1  # a control's increment
    slider: bool = False  # a continuous knob that reads best as a slider
    control_range: tuple[float, float] | None = None  # a slider's or number box's ends, where the range is open

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def hint(self) -> str:
        """The help for a control that may be left blank."""
        return f"{self.help}; blank = {self.blank}" if self.optional and self.blank else self.help

    @property
    def default(self):
        return GenerationSettings.__dataclass_fields__[self.name].default

    @property
    def bounds(self) -> tuple[float, float]:
        """The ends a control offers: the valid range, narrowed to control_range where that is open."""
        low, high = self.control_range or (self.minimum, self.maximum)
        return (low if low is not None else self.minimum), (high if high is not None else self.maximum)

    def range_text(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"in ({low:g}, {high:g}]" if self.exclusive_minimum else f"between {low:g} and {high:g}"
        return f"{'>' if self.exclusive_minimum else '>='} {low:g}"

    def check(self, value) -> None:
        """SettingsError (one line, with the help) unless `value` is in range."""
        if value is None and self.optional:
            return
        low, high = self.minimum, self.maximum
        ok = value is not None and not (
            (low is not None and (value <= low if self.exclusive_minimum else value < low))
            or (high is not None and value > high))
        if not ok:
            raise SettingsError(f"{self.label.lower()} must be {self.range_text()} ({self.help})")

    def parse(self, text: str):
        """A value from what was typed (a form field); blank is None for an optional setting."""
        text = text.strip()
        if not text and self.optional:
            return None
        try:
            return self.type(text)
        except ValueError:
            kind = "a whole number" if self.type is int else "a number"
            raise SettingsError(f"{self.label.lower()} must be {kind}, not {text!r}") from None


DESCRIPTIONS: tuple[Setting, ...] = (
    Setting("temperature", "Temperature", "0 = greedy, always the likeliest token; higher = bolder", float,
            minimum=0, step=0.05, slider=True, control_range=(0.0, 2.0)),
    Setting("top_p", "Top-p", "sample from the smallest set of tokens with this much probability", float,
            minimum=0, maximum=1, exclusive_minimum=True, step=0.05, slider=True, control_range=(0.05, 1.0)),
    Setting("top_k", "Top-k", "sample among the k likeliest tokens; 0 = no limit", int,
            minimum=0, control_range=(0, 1000)),
    Setting("repetition_penalty", "Repetition penalty", "> 1 discourages repeats; 1 = off", float,
            minimum=0, exclusive_minimum=True, step=0.05, slider=True, control_range=(0.5, 2.0)),
    Setting("no_repeat_ngram_size", "No-repeat n-gram", "forbid repeating n-grams of this size; 0 = off", int,
            minimum=0, control_range=(0, 10)),
    Setting("max_new_tokens", "Max new tokens", "reply length cap", int, minimum=1, maximum=4096, step=8),
    Setting("seed", "Seed", "a number makes sampling repeatable", int,
            optional=True, blank="random", control_range=(0, 2**31 - 1)),
)


@dataclass
class GenerationSettings:
    # Defaults tuned against repetition loops in short movie lines; DESCRIPTIONS says what each is.
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.15
    no_repeat_ngram_size: int = 3
    max_new_tokens: int = 64
    seed: int | None = None

    @staticmethod
    def descriptions() -> tuple[Setting, ...]:
        return DESCRIPTIONS

    def validate(self) -> "GenerationSettings":
        for setting in DESCRIPTIONS:
            setting.check(getattr(self, setting.name))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def replace(self, **changes) -> "GenerationSettings":
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return GenerationSettings.from_dict(data)
