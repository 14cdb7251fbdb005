"""The corpus's files: a directory or a zip read in place, and the original release's line format.

Files are found by name at any depth (the shallowest copy wins; macOS `__MACOSX`
debris is ignored). The original release's files hold one record a line, fields
separated by ` +++$+++ `, text in ISO-8859-1; `original_records` streams the
fields of each usable line, and the small parsers read the fields' lists, years
and genders. Both corpus readers and the cast file use them.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from trainer.corpus_records import UNKNOWN_GENDER

SEPARATOR = "+++$+++"
SPACED_SEPARATOR = " +++$+++ "
ORIGINAL_ENCODING = "iso-8859-1"


class CorpusError(Exception):
    """The corpus cannot be read at all (missing path, no corpus files, broken zip)."""


class CorpusFiles:
    """A directory or a zip whose files are found by name at any depth."""

    def __init__(self, path: Path, names: list[str], zf: zipfile.ZipFile | None = None) -> None:
        self.path, self.zip = path, zf
        self._by_name: dict[str, str] = {}
        usable = (n for n in names if "__MACOSX" not in PurePosixPath(n).parts and not PurePosixPath(n).name.startswith("._"))
        for name in sorted(usable, key=lambda n: (n.count("/"), n)):  # the shallowest copy wins
            self._by_name.setdefault(PurePosixPath(name).name, name)

    @classmethod
    @contextmanager
    def open_path(cls, path: Path) -> Iterator["CorpusFiles"]:
        if not path.exists():
            raise CorpusError(f"corpus path {path} does not exist")
        if path.is_dir():
            names = [str(PurePosixPath(*(Path(root) / f).relative_to(path).parts)) for root, _, files in os.walk(path) for f in files]
            yield cls(path, names)
            return
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorpusError(f"{path} is neither a directory nor a readable zip file ({exc})") from None
        with zf:
            yield cls(path, [i.filename for i in zf.infolist() if not i.is_dir()], zf)

    def find(self, name: str) -> str | None:
        return self._by_name.get(name)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        member = self._by_name[name]
        try:
            with (self.zip.open(member) if self.zip else open(self.path / member, "rb")) as f:
                yield f
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise CorpusError(f"cannot read {member} in {self.path}: {exc}") from None


def original_records(source: CorpusFiles, name: str, n_fields: int, kind: str, skipped: Counter) -> Iterator[list[str]]:
    """The fields of each usable line of an original-format file, streamed."""
    if not source.find(name):
        return
    with source.open(name) as f:
        for raw in f:
            line = raw.decode(ORIGINAL_ENCODING)  # every byte decodes; cleaning fixes the odd ones
            if not line.strip():
                skipped["blank_line"] += 1
                continue
            fields = line.rstrip("\r\n").split(SPACED_SEPARATOR)
            if len(fields) != n_fields:  # tolerate a separator that lost its spaces
                fields = [part.strip() for part in line.split(SEPARATOR)]
            if len(fields) != n_fields or not fields[0]:
                skipped[f"malformed_{kind}_line"] += 1
                continue
            yield fields


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_YEAR = re.compile(r"\d{4}")


def quoted_list(text: str) -> list[str] | None:
    """["a", "b"] from "['a', 'b']"; None when it is not such a list."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    return [a or b for a, b in _QUOTED.findall(text)]


def parse_year(text: str) -> int | None:
    match = _YEAR.search(text or "")
    return int(match.group()) if match else None


def parse_gender(text: str) -> str:
    text = (text or "").strip().lower()
    return text if text in ("f", "m") else UNKNOWN_GENDER
