"""Plain text as Markdown that renders as exactly that text.

Streamlit renders chat text, captions and widget labels as Markdown. Anything a
user typed (or a model wrote) goes through `text_to_markdown` first, so it can't
become a heading, a link, an image, raw HTML or a script: every ASCII
punctuation character is backslash-escaped (CommonMark allows that for all of
them), line breaks stay line breaks, and leading blanks can't start a code block.
Streamlit also turns bare URLs and e-mail addresses into links after parsing (GFM
autolink literals), where escapes no longer count: an invisible word joiner before
every ":", "." and "@" keeps them text. Message bodies themselves are shown with
`st.text`; this is for what must be Markdown (streamed replies, titles, labels).
"""

from __future__ import annotations

import re
import string
from typing import Iterable, Iterator

NBSP = "\u00a0"
WORD_JOINER = "\u2060"  # zero width, not rendered
_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})  # all ASCII punctuation
_ESCAPES.update({ord(c): WORD_JOINER + "\\" + c for c in ":.@"})  # "http:", "www.", "a@b": autolinks
_LEADING_BLANKS = re.compile(r"^[ \t]+", re.MULTILINE)


def _nbsp(match: re.Match) -> str:
    return match.group().replace("\t", "    ").replace(" ", NBSP)


def text_to_markdown(text: str, at_line_start: bool = True) -> str:
    """Escape `text`; `at_line_start=False` when it continues a line (streamed pieces)."""
    text = text.translate(_ESCAPES)
    first, newline, rest = text.partition("\n")
    if at_line_start:
        first = _LEADING_BLANKS.sub(_nbsp, first)
    rest = _LEADING_BLANKS.sub(_nbsp, rest)
    # Two trailing spaces make a hard line break; a bare newline would join the lines.
    return (first + newline + rest).replace("\n", "  \n")


def markdown_pieces(pieces: Iterable[str]) -> Iterator[str]:
    """Escape a stream of text pieces; their concatenation equals text_to_markdown of the whole."""
    at_line_start = True
    for piece in pieces:
        if not piece:
            continue
        yield text_to_markdown(piece, at_line_start)
        last_line = piece.rpartition("\n")[2]
        blank = not last_line.strip(" \t")
        at_line_start = blank and ("\n" in piece or at_line_start)
