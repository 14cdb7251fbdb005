"""The page's messages and what can be done to each: move between its versions (‹ 2/3 ›), regenerate
a reply, edit one of your messages, fork the conversation there, rate a reply.

Buttons act in callbacks, before the page reruns. Regenerate and edit need a reply streamed into the
page, which only the script body can do: their callbacks leave a `PENDING` request that `main` runs
(`start_pending`) after the sidebar, so the new reply streams where it belongs.
"""

from __future__ import annotations

import streamlit as st

from moviechat_tui.core.captions import SECONDS, cut_short, display_time, reply_facts, settings_line
from moviechat_tui.core.dialogue import USER
from moviechat_tui.core.engine import ChatEngine, EngineError, Reply, clean_user_text
from moviechat_tui.core.store import Message, StoreError
from web.markup import text_to_markdown
from web.session import flash, open_conversation

PENDING = "pending"  # ("regenerate" | "edit", message id, text): started by start_pending
EDITING = "editing"  # the id of the user message being edited
THUMBS = {"down": 0, "up": 1}  # st.feedback("thumbs") values
OUT_OF_CHARACTER = "Out of character"


def short_time(iso: str) -> str:
    return display_time(iso, SECONDS, utc=True)


def message_caption(m: Message, details: bool) -> str:
    if details:
        parts = [f"#{m.position + 1}", short_time(m.created_at), *reply_facts(m)]
        parts += [m.status] if m.status != "complete" else []
        if m.alternatives > 1:
            parts.append(f"version {m.alternative} of {m.alternatives}")
        if m.rating or m.out_of_character:
            parts.append(", ".join(filter(None, [m.rating and f"rated {m.rating}",
                                                 m.out_of_character and "out of character"])))
        return " · ".join(parts)
    if m.status != "complete":
        return m.status
    return "cut at max new tokens" if cut_short(m) else ""  # why it ends mid-sentence, and what to raise


def show_message(m: Message, details: bool = False, engine: ChatEngine | None = None,
                 can_reply: bool = True) -> None:
    """One message; with `engine`, its actions under it (`can_reply`: regenerate and edit are on)."""
    with st.chat_message("user" if m.role == USER else "assistant"):
        if engine is not None and st.session_state.get(EDITING) == m.id:
            edit_form(m)
            return
        if m.text:
            st.text(m.text)  # plain text: no Markdown, no HTML, nothing to escape
        else:
            st.caption("(no text)")
        caption = message_caption(m, details)
        if caption:
            st.caption(text_to_markdown(caption))
        if details and m.role != USER and m.settings:
            st.caption(text_to_markdown(settings_line(m.settings)))
        if engine is not None:
            actions(engine, m, can_reply)


# --- the actions row ---------------------------------------------------------------------------


def actions(engine: ChatEngine, m: Message, can_reply: bool) -> None:
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        if m.alternatives > 1:
            st.button("‹", key=f"prev:{m.id}", type="tertiary", help="the previous version",
                      disabled=m.alternative == 1, on_click=_step, args=(engine, m, -1))
            st.caption(f"{m.alternative}/{m.alternatives}", width="content")
            st.button("›", key=f"next:{m.id}", type="tertiary", help="the next version",
                      disabled=m.alternative == m.alternatives, on_click=_step, args=(engine, m, 1))
        if m.role == USER:
            st.button("Edit", key=f"edit:{m.id}", icon=":material/edit:", type="tertiary", disabled=not can_reply,
                      help="change this message and send it again (the old version stays one step away)",
                      on_click=st.session_state.update, kwargs={EDITING: m.id})
        else:
            st.button("Regenerate", key=f"regenerate:{m.id}", icon=":material/refresh:", type="tertiary",
                      disabled=not can_reply, help="answer again (this reply stays one step away)",
                      on_click=_request, args=("regenerate", m.id))
        st.button("Fork", key=f"fork:{m.id}", icon=":material/call_split:", type="tertiary",
                  help="a new conversation that starts with the messages up to here",
                  on_click=_fork, args=(engine, m))
        if m.role != USER:
            st.feedback("thumbs", key=f"rating:{m.id}", default=THUMBS.get(m.rating),
                        on_change=_rate, args=(engine, m.id))
            st.pills("Character", [OUT_OF_CHARACTER], key=f"ooc:{m.id}", label_visibility="collapsed",
                     default=OUT_OF_CHARACTER if m.out_of_character else None, on_change=_rate, args=(engine, m.id),
                     help="the reply broke character (kept with the rating for training)")


def edit_form(m: Message) -> None:
    with st.form(key=f"edit-form:{m.id}", border=False):
        st.text_area("Edit your message", m.text, key=f"edit-text:{m.id}", label_visibility="collapsed")
        with st.container(horizontal=True, gap="small"):
            st.form_submit_button("Send", type="primary", icon=":material/send:", on_click=_submit_edit, args=(m,))
            st.form_submit_button("Cancel", on_click=st.session_state.update, kwargs={EDITING: None})
    st.caption("Sending starts a new branch here; the old message and what followed it stay one step away.")


# --- callbacks ---------------------------------------------------------------------------------


def _step(engine: ChatEngine, m: Message, step: int) -> None:
    try:
        engine.show_alternative(m.conversation_id, m.id, step)
    except (EngineError, StoreError) as exc:
        flash("error", f"Can't switch versions: {exc}")


def _request(action: str, message_id: int, text: str = "") -> None:
    st.session_state[PENDING] = (action, message_id, text)


def _submit_edit(m: Message) -> None:
    text = st.session_state.get(f"edit-text:{m.id}", "")
    try:
        clean_user_text(text)
    except EngineError as exc:
        flash("warning", str(exc))
        return
    st.session_state[EDITING] = None
    _request("edit", m.id, text)


def _fork(engine: ChatEngine, m: Message) -> None:
    try:
        forked = engine.fork(m.conversation_id, m.id)
    except (EngineError, StoreError) as exc:
        flash("error", f"Not forked: {exc}")
        return
    open_conversation(forked.id)
    flash("success", f"Forked into conversation #{forked.id}: what you say now goes here.")


def _rate(engine: ChatEngine, message_id: int) -> None:
    thumbs = st.session_state.get(f"rating:{message_id}")
    rating = next((name for name, value in THUMBS.items() if value == thumbs), None)
    out_of_character = st.session_state.get(f"ooc:{message_id}") == OUT_OF_CHARACTER
    try:
        engine.rate(message_id, rating, out_of_character)
    except (EngineError, StoreError) as exc:
        flash("error", f"Rating not saved: {exc}")


def start_pending(engine: ChatEngine, conversation_id: int) -> Reply | None:
    """Start the regenerate or edit a button asked for (its messages are saved before it returns)."""
    request = st.session_state.pop(PENDING, None)
    if request is None:
        return None
    action, message_id, text = request
    try:
        if action == "edit":
            return engine.edit(conversation_id, message_id, text)
        return engine.regenerate(conversation_id, message_id=message_id)
    except (EngineError, StoreError) as exc:
        st.warning(text_to_markdown(f"Not done: {exc}"))
        return None
