"""Downloading the corpus from a local HTTP server: verified, atomic, cached, clear when offline."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

import trainer.download as download
from trainer.cli import main
from trainer.corpus import load_corpus
from trainer.download import DownloadError, ensure_corpus

CORNELL_MINI = Path(__file__).parent / "fixtures" / "cornell-mini"


def _mini_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in sorted(CORNELL_MINI.iterdir()):
            zf.write(f, f"cornell movie-dialogs corpus/{f.name}")
    return buffer.getvalue()


ZIP = _mini_zip()
ZIP_SHA256 = hashlib.sha256(ZIP).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(ZIP)))
        self.end_headers()
        if self.path == "/dropped.zip":  # half the file, then the connection dies
            self.wfile.write(ZIP[: len(ZIP) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(ZIP)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cornell_movie_dialogs_corpus.zip"


def _leftovers() -> list[str]:
    root = download.corpus_cache_dir()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_verified_download_is_extracted_once_and_reused(server):
    path = ensure_corpus(f"{server}/corpus.zip", sha256=ZIP_SHA256, progress=False)
    assert path == download.corpus_cache_dir() / download.CORPUS_DIRNAME
    assert load_corpus(path).stats()["conversations"] == 8
    assert _leftovers() == [download.CORPUS_DIRNAME]  # no temp file or staging dir left
    assert ensure_corpus(f"{server}/corpus.zip", sha256=ZIP_SHA256, progress=False) == path
    assert _Handler.requests == ["/corpus.zip"]  # the second call used the cache


def test_wrong_checksum_leaves_nothing_behind(server):
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        ensure_corpus(f"{server}/corpus.zip", sha256="0" * 64, progress=False)
    assert "--corpus PATH" in str(info.value)
    assert _leftovers() == []
    assert download.cached_corpus() is None


def test_connection_dropped_mid_file_leaves_nothing_behind(server):
    with pytest.raises(DownloadError, match="--corpus PATH"):
        ensure_corpus(f"{server}/dropped.zip", sha256=None, progress=False)  # even unpinned
    assert _leftovers() == []
    assert ensure_corpus(f"{server}/corpus.zip", sha256=ZIP_SHA256, progress=False).is_dir()  # a retry works


def test_offline_error_says_how_to_pass_a_local_copy():
    url = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        ensure_corpus(url, progress=False, timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "--corpus PATH" in message and url in message


def test_cli_without_corpus_downloads_or_fails_cleanly(server, monkeypatch, capsys):
    monkeypatch.setattr(download, "CORNELL_URL", _closed_port_url())
    assert main(["corpus", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: cannot download") and "--corpus PATH" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err

    monkeypatch.setattr(download, "CORNELL_URL", f"{server}/corpus.zip")
    monkeypatch.setattr(download, "CORNELL_SHA256", ZIP_SHA256)
    assert main(["corpus", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["utterances"] == 24
