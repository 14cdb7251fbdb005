"""What one browser session keeps between reruns: its open conversation (also in the URL) and the
messages to show at the top of the next run."""

from __future__ import annotations

import streamlit as st

from web.markup import text_to_markdown

CURRENT = "conversation_id"


def flash(level: str, text: str) -> None:
    """A message shown at the top of the next run (survives st.rerun)."""
    st.session_state.setdefault("flash", []).append((level, text))


def show_flashes() -> None:
    for level, text in st.session_state.pop("flash", []):
        getattr(st, level)(text_to_markdown(text))


def open_conversation(conversation_id: int | None) -> None:
    st.session_state[CURRENT] = conversation_id
    st.session_state.confirm_delete = False
    st.session_state.editing = None
    st.session_state.view = "Chat"
    show_in_url(conversation_id)


def show_in_url(conversation_id: int | None) -> None:
    """?conversation=ID: a reload (a new session) reopens it, and the URL can be shared."""
    wanted = None if conversation_id is None else str(conversation_id)
    if st.query_params.get("conversation") != wanted:
        if wanted:
            st.query_params["conversation"] = wanted
        else:
            st.query_params.pop("conversation", None)
