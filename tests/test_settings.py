"""Decoding settings are described once; validation, the CLI options and the forms follow it."""

from dataclasses import fields

import pytest

from moviechat_tui.cli import build_parser
from moviechat_tui.core.settings import DESCRIPTIONS, GenerationSettings, SettingsError


def test_every_setting_is_described_once_with_its_default():
    assert [s.name for s in DESCRIPTIONS] == [f.name for f in fields(GenerationSettings)]
    defaults = GenerationSettings()
    for setting in DESCRIPTIONS:
        assert setting.default == getattr(defaults, setting.name)
        assert setting.label and setting.help and "\n" not in setting.help
        low, high = setting.bounds
        assert low <= high
        if setting.default is not None:
            assert low <= setting.default <= high  # a control can show the default


@pytest.mark.parametrize("name,good,bad", [
    ("temperature", 0, -0.01), ("top_p", 1, 0), ("top_p", 0.01, 1.01), ("top_k", 0, -1),
    ("repetition_penalty", 0.01, 0), ("no_repeat_ngram_size", 0, -1), ("max_new_tokens", 4096, 4097),
    ("max_new_tokens", 1, 0), ("seed", None, None),
])
def test_validation_reads_the_described_ranges(name, good, bad):
    GenerationSettings(**{name: good}).validate()
    if bad is not None:
        with pytest.raises(SettingsError) as info:
            GenerationSettings(**{name: bad}).validate()
        label = next(s.label for s in DESCRIPTIONS if s.name == name).lower()
        assert str(info.value).startswith(f"{label} must be ") and "\n" not in str(info.value)


def test_the_chat_command_has_one_option_per_setting():
    flags = [s.flag for s in DESCRIPTIONS]
    values = ["0.5", "0.8", "20", "1.3", "2", "32", "7"]
    args = build_parser().parse_args(["chat", *[x for pair in zip(flags, values) for x in pair]])
    assert GenerationSettings().replace(**{s.name: getattr(args, s.name) for s in DESCRIPTIONS}) == GenerationSettings(
        temperature=0.5, top_p=0.8, top_k=20, repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=32, seed=7)
    help_text = build_parser()._subparsers._group_actions[0].choices["chat"].format_help()
    assert all(flag in help_text for flag in flags) and "(default 0.7)" in help_text


def test_typed_values_are_parsed_by_their_description():
    top_k = next(s for s in DESCRIPTIONS if s.name == "top_k")
    seed = next(s for s in DESCRIPTIONS if s.name == "seed")
    assert top_k.parse(" 12 ") == 12 and seed.parse("") is None
    with pytest.raises(SettingsError, match="top-k must be a whole number, not 'many'"):
        top_k.parse("many")
