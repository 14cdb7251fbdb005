"""Where converted copies of a model live (CTranslate2, GGUF): a folder per source and version.

A conversion is found again by `label_for(source)` (a readable folder prefix) and a key that changes
when any of the model's files changes (`files_digest`), so a retrained or replaced model is
converted again and a read-only package directory is never written to. `ConversionCache` is one
backend's folder of them: find one, make one once (a failure is remembered, so it isn't retried
every launch), list them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

from ..paths import cache_dir
from . import BackendError

WHOLE_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole; bigger ones by size, mtime, head and tail
EDGE = 1 << 20


def file_digest(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:  # hashing a large checkpoint whole would cost seconds on every launch
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(handle.read(EDGE))
            handle.seek(-EDGE, os.SEEK_END)
            digest.update(handle.read(EDGE))
    return digest.hexdigest()


def files_digest(files: Iterable[Path], salt: str) -> str:
    """A key that changes when any of `files`, or `salt` (the converter's version and options), changes."""
    digest = hashlib.sha256(salt.encode())
    for path in sorted({Path(p).resolve() for p in files}):
        digest.update(f"{path.name}:{file_digest(path)}\n".encode())
    return digest.hexdigest()[:20]


def label_for(source: str) -> str:
    """A readable, collision-free folder prefix for one model source (a path or a hub id)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source).strip("-") or "model"
    return f"{name[:40]}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def choice_from_env(name: str, options: tuple[str, ...]) -> str:
    """$name lower-cased, "auto" when unset; BackendError (one line) when it is none of `options`."""
    choice = (os.environ.get(name) or "auto").strip().lower()
    if choice not in ("auto", *options):
        raise BackendError(f"unknown {name} {choice!r}; use auto, {', '.join(options)}")
    return choice


class ConversionCache:
    """One backend's converted copies: cache_dir()/<folder>/<label>-<key>/, finished once `metadata` is there."""

    UNSUPPORTED = "unsupported.txt"  # left where a conversion failed, so it isn't retried every launch

    def __init__(self, folder: str, metadata: str) -> None:
        self.folder, self.metadata = folder, metadata

    @property
    def root(self) -> Path:
        return cache_dir() / self.folder

    def target(self, label: str, key: str) -> Path:
        return self.root / f"{label}-{key}"

    def find(self, label: str, key: str) -> Path | None:
        """The finished conversion for these files; BackendError if converting them failed before."""
        target = self.target(label, key)
        if (target / self.UNSUPPORTED).is_file():
            raise BackendError((target / self.UNSUPPORTED).read_text().strip())
        return target if (target / self.metadata).is_file() else None

    def make(self, label: str, key: str, convert: Callable[[Path], None], failure: Callable[[Exception, str], str]) -> Path:
        """`convert(target)` once; a failure is written down as `failure(exc, its first line)` and raised as a
        BackendError. Older conversions of the same source are removed."""
        target = self.target(label, key)
        try:
            convert(target)
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            message = failure(exc, line)
            target.mkdir(parents=True, exist_ok=True)
            (target / self.UNSUPPORTED).write_text(message + "\n")
            raise BackendError(message) from exc
        for stale in self.root.glob(f"{label}-*"):
            if stale != target and ".tmp-" not in stale.name:
                shutil.rmtree(stale, ignore_errors=True)
        return target

    def listing(self, describe: Callable[[Path, dict], dict], backend: str) -> list[dict]:
        """A row per copy: `describe(folder, metadata)` for finished ones, why not for failed ones."""
        rows = []
        for folder in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            if (folder / self.metadata).is_file():
                rows.append({"folder": folder.name, **describe(folder, json.loads((folder / self.metadata).read_text()))})
            elif (folder / self.UNSUPPORTED).is_file():
                rows.append({"folder": folder.name, "backend": backend, "change_pct": None,
                             "note": (folder / self.UNSUPPORTED).read_text().strip()})
        return rows
