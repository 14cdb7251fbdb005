"""Keys for converted copies of a model (CTranslate2, GGUF): a folder per source, a key per version.

A conversion is found again by `label_for(source)` (a readable folder prefix) and a key that changes
when any of the model's files changes (`files_digest`), so a retrained or replaced model is
converted again and a read-only package directory is never written to.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable

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
