"""Cleaning rules: debris goes, words stay."""

from __future__ import annotations

import pytest

from trainer.clean import CleanConfig, clean_text


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("We'll give 'em a <u>rough</u> <u>reception</u>, won't we?", "We'll give 'em a rough reception, won't we?"),
        ("I'm *not* a doctor!", "I'm not a doctor!"),
        ("*                     Please tell me your name.", "Please tell me your name."),
        ("That's Hamilton's idea[5] - the finest", "That's Hamilton's idea - the finest"),
        ("Sit. Can you...  [The chair. Have the chair.]", "Sit. Can you..."),
        ("okay--I  thought---", "okay -- I thought --"),
        ("-- and then he left", "and then he left"),
        ("I just wanted --", "I just wanted --"),
        ("you know--?", "you know --?"),
        ("But listen, Tom, I\u00ef\u00bf\u00bd", "But listen, Tom, I --"),  # lost char read as ISO-8859-1
        ("a telegram from head\ufffdquarters", "a telegram from headquarters"),
        ("It\x92s fine\x85", "It\u2019s fine\u2026"),  # Windows-1252 bytes read as ISO-8859-1
        ("  Tabs\tand\r\nnewlines  ", "Tabs and newlines"),
        ("\x00\x1b", ""),
        ("Patrick Verona   Random skid.", "Patrick Verona Random skid."),
        ("Don't touch THAT.", "Don't touch THAT."),  # case kept by default
    ],
)
def test_default_rules(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_lowercase_is_opt_in():
    assert clean_text("Hello THERE", CleanConfig(lowercase=True)) == "hello there"


def test_each_rule_can_be_switched_off():
    off = CleanConfig(fix_encoding=False, strip_markup=False, strip_stage_directions=False,
                      normalize_dashes=False, normalize_whitespace=False)
    text = "<u>a</u>  *b* [c]--d\ufffd"
    assert clean_text(text, off) == text
    assert clean_text(text, CleanConfig(strip_markup=False)) == "<u>a</u> *b* -- d --"
