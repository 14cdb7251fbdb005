"""Fetch the official Cornell zip once into the user cache, verified, extracted atomically.

Layout under `cache_dir()/corpus/`:

    cornell_movie_dialogs_corpus/   the extracted release (appears only when complete)
    .download-*.part, .extract-*    in-progress temporaries (never read as a corpus)

Steps: download to a temp file -> check its SHA-256 -> extract into a temp
dir -> rename that dir into place. A crash or a dropped connection at any step
leaves no directory that looks complete, and the next run starts over.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from moviechat_tui.core.paths import cache_dir
from trainer.corpus_files import CorpusError

CORNELL_URL = "https://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
# SHA-256 of the zip at CORNELL_URL (9,916,637 bytes), as published in the
# Hugging Face `datasets` checksum file for this exact URL
# (datasets/cornell_movie_dialog/dataset_infos.json). Not re-verified from here:
# this environment cannot reach cornell.edu. Set to None to accept any file.
CORNELL_SHA256: str | None = "3bde8a571f615201bc2d2453e22878090719638592f774720eddec739de8c900"
CORPUS_DIRNAME = "cornell_movie_dialogs_corpus"
TIMEOUT_S = 30.0
CHUNK = 1 << 16


class DownloadError(CorpusError):
    """The corpus could not be fetched or failed verification."""


def local_copy_hint() -> str:
    return "download the zip on a machine with network access and pass it with --corpus PATH (the zip or its extracted folder)"


def corpus_cache_dir() -> Path:
    return cache_dir() / "corpus"


def cached_corpus() -> Path | None:
    """The extracted corpus from an earlier download, if there is one."""
    target = corpus_cache_dir() / CORPUS_DIRNAME
    return target if target.is_dir() else None


_PINNED = "pinned"


def ensure_corpus(
    url: str | None = None,
    sha256: str | None = _PINNED,
    timeout: float = TIMEOUT_S,
    progress: bool = True,
) -> Path:
    """The extracted corpus directory, downloading and extracting it on first use.

    `url` defaults to CORNELL_URL and `sha256` to CORNELL_SHA256 (None: accept
    any file). Raises DownloadError, whose message says how to use a local copy.
    """
    if (found := cached_corpus()) is not None:
        return found
    url = url or CORNELL_URL
    sha256 = CORNELL_SHA256 if sha256 == _PINNED else sha256
    root = corpus_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=root)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, timeout, progress)
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest}; {local_copy_hint()}")
        return _extract(part, root / CORPUS_DIRNAME)
    finally:
        part.unlink(missing_ok=True)


def _fetch(url: str, out, timeout: float, progress: bool) -> str:
    """Stream `url` into `out`; return the SHA-256 of what arrived; raise DownloadError on any failure."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = int(response.headers.get("Content-Length") or 0) or None
            with _progress_bar(progress, expected) as advance:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {local_copy_hint()}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot download {url} (no network? {exc.reason}); {local_copy_hint()}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, IncompleteRead
        raise DownloadError(f"download of {url} failed after {received} bytes ({exc!r}); {local_copy_hint()}") from None
    if expected is not None and received != expected:
        raise DownloadError(f"download of {url} stopped at {received} of {expected} bytes; {local_copy_hint()}")
    return digest.hexdigest()


def _extract(zip_path: Path, target: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(staging)  # extractall drops absolute paths and ".." parts
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"the downloaded file is not a valid zip ({exc}); {local_copy_hint()}") from None
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process finishing first is fine
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _progress_bar:
    """A rich download bar on stderr (or nothing); yields an `advance(n)` callable."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.bar = Progress(
            TextColumn("Cornell corpus"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            console=Console(stderr=True), transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("download", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
