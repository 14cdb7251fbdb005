"""Cleaning of utterance text: the corpus's markup and encoding debris, nothing more.

Every rule removes something that was never spoken (tags, footnote markers,
page-break asterisks, broken characters) or normalises how the same thing is
written (whitespace, dash runs). No rule rewrites words, so a cleaned line means
what the original meant. Each rule can be switched off in `CleanConfig`.

Examples (default config):

    "We'll give 'em a <u>rough</u> reception"  -> "We'll give 'em a rough reception"
    "I'm *not* a doctor!"                      -> "I'm not a doctor!"
    "*                     Please tell me"     -> "Please tell me"
    "idea[5] - the finest"                     -> "idea - the finest"
    "okay--I  thought---"                      -> "okay -- I thought --"
    "-- and then"                              -> "and then"
    "But listen, Tom, I\\ufffd"                 -> "But listen, Tom, I --"
    "head\\ufffdquarters"                       -> "headquarters"
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CleanConfig:
    """Which cleaning rules run; see the module docstring for what each does."""

    fix_encoding: bool = True  # lost characters (U+FFFD), Windows-1252 bytes read as ISO-8859-1, control characters
    strip_markup: bool = True  # <u>/<i>/<b> tags, *emphasis* and page-break asterisks
    strip_stage_directions: bool = True  # [bracketed] directions and [12] footnote markers
    normalize_dashes: bool = True  # "--", "---", "word--word" -> " -- "; no leading dashes
    normalize_whitespace: bool = True  # runs of spaces/tabs/newlines -> one space, trimmed
    lowercase: bool = False  # off: case carries meaning (names, shouting)


# The corpus holds some UTF-8 "replacement character" bytes (EF BF BD), a
# character lost before the corpus was made; read as ISO-8859-1 they look like this.
_LOST_CHAR = re.compile("(?:\u00ef\u00bf\u00bd|\ufffd)+")
# After a word and before a space or the end of the line, a lost character was
# almost always a dash (a cut-off line: "But listen, Tom, I--"); inside a word it
# was a letter or a hyphen, and dropping it keeps the word readable.
_LOST_AT_WORD_END = re.compile(f"(?<=\\w){_LOST_CHAR.pattern}(?=\\s|$)")
_C1_CONTROLS = re.compile("[\u0080-\u009f]")
_OTHER_CONTROLS = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]")
_TAGS = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\s*/?>")
_ASTERISKS = re.compile(r"\*+")
_FOOTNOTES = re.compile(r"\[\d+\]")
_BRACKETED = re.compile(r"\[[^\[\]]*\]")
_DASH_RUN = re.compile(r"\s*(?:-{2,}|\u2014|\u2013(?=\s))\s*")
_DASH_BEFORE_PUNCT = re.compile(r" -- (?=[?!.,;:\"')]|$)")
_LEADING_DASHES = re.compile(r"^(?:\s*--)+\s*")
_WHITESPACE = re.compile(r"\s+")


def _windows_1252(match: re.Match) -> str:
    # Bytes 0x80-0x9f are control codes in ISO-8859-1 but quotes/dashes in
    # Windows-1252, which is what such bytes in a script almost always were.
    try:
        return match.group().encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:
        return ""  # the five bytes Windows-1252 leaves undefined: meaningless


def clean_text(text: str, config: CleanConfig = CleanConfig()) -> str:
    """`text` with the rules of `config` applied; may return "" (an empty utterance)."""
    # Each rule first checks, with a cheap test, whether it can apply at all:
    # most lines need none of them and loading the full corpus stays fast.
    if config.fix_encoding and not text.isprintable():  # non-printable: controls, and tabs (harmless)
        text = _OTHER_CONTROLS.sub("", text)
    if config.fix_encoding and not text.isascii():
        text = _LOST_AT_WORD_END.sub("--", text)
        text = _LOST_CHAR.sub("", text)
        text = _C1_CONTROLS.sub(_windows_1252, text)
    if config.strip_markup:
        if "<" in text:
            text = _TAGS.sub("", text)
        if "*" in text:
            text = _ASTERISKS.sub("", text)
    if config.strip_stage_directions and "[" in text:
        text = _FOOTNOTES.sub("", text)
        text = _BRACKETED.sub(" ", text)
    dashes = config.normalize_dashes and ("--" in text or "\u2014" in text or "\u2013" in text)
    if dashes:
        text = _DASH_RUN.sub(" -- ", text)
        text = _DASH_BEFORE_PUNCT.sub(" --", text)
        text = _LEADING_DASHES.sub("", text)
    if config.normalize_whitespace:
        text = " ".join(text.split())
        if dashes:
            text = _DASH_BEFORE_PUNCT.sub(" --", text)
    if config.lowercase:
        text = text.lower()
    return text
