"""What the page shares across reruns and browser sessions: its settings, the store, the model, the engine.

Everything heavy is created once per server process with `st.cache_resource`, so memory doesn't grow
with page reloads or sessions. The Store is thread-safe and the engine serializes generation per model,
so sharing them between sessions' script threads is safe.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.loading import DEFAULT_SPEC, LoadedModel, ModelLoadError, load_model
from moviechat_tui.core.paths import default_db_path
from moviechat_tui.core.store import Store

# A page waiting on a database another program holds locked: give up (with a message) after this.
DB_BUSY_TIMEOUT = 10.0


@dataclass(frozen=True)
class PageConfig:
    model_spec: str
    db_path: Path


def page_config(argv: list[str] | None = None, environ=os.environ) -> PageConfig:
    """`streamlit run web/app.py -- --model SPEC --db PATH`, else $MOVIECHAT_MODEL / $MOVIECHAT_DB."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    model = args.model or environ.get("MOVIECHAT_MODEL") or DEFAULT_SPEC
    db = args.db or environ.get("MOVIECHAT_DB") or default_db_path()
    return PageConfig(model, Path(db).expanduser())


@st.cache_resource(show_spinner=False)
def _model_or_error(spec: str) -> LoadedModel | ModelLoadError:
    # A failure is cached too: a model that can't load isn't retried on every rerun of every session.
    try:
        return load_model(spec)
    except ModelLoadError as exc:
        return exc.with_traceback(None)


def shared_model(spec: str) -> LoadedModel:
    """The model for `spec`, loaded once per process; raises the (cached) ModelLoadError."""
    result = _model_or_error(spec)
    if isinstance(result, ModelLoadError):
        raise result
    return result


def forget_model_error(spec: str) -> None:
    """Let the next `shared_model(spec)` try loading again."""
    if isinstance(_model_or_error(spec), ModelLoadError):
        _model_or_error.clear(spec)


@st.cache_resource(show_spinner=False)
def _engine(spec: str, db_path: str) -> ChatEngine:
    return ChatEngine(Store(db_path, busy_timeout=DB_BUSY_TIMEOUT), spec, loader=shared_model)


def shared_engine(config: PageConfig) -> tuple[ChatEngine, str | None]:
    """The engine for this page, and a notice when its database had to be opened afresh.

    Raises StoreError (one-line message) when the database can't be opened.
    """
    engine = _engine(config.model_spec, str(config.db_path))
    if engine.store.path.exists():
        return engine, None
    # Deleted while the server ran: the open connection writes to a file nobody can see any more.
    # The old engine is left open (a reply may still be streaming through it) and dropped with it.
    _engine.clear(config.model_spec, str(config.db_path))
    engine = _engine(config.model_spec, str(config.db_path))
    return engine, f"{config.db_path} was removed while the page was open; started a new, empty database there."
