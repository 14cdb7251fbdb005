"""The moviechat web page: `moviechat-tui web` runs `streamlit run web/app.py -- --model SPEC --db PATH`.

Same engine and SQLite database as the TUI: the page re-reads the database on every rerun, so a
conversation started in one shows up in the other. Each browser session keeps its own current
conversation in `st.session_state` (and in the URL, so a reload reopens it). Everything a user or
the model wrote is rendered through `text_to_markdown`, never as HTML.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run web/app.py` puts web/ on sys.path, not the project
    sys.path.insert(0, _ROOT)

from moviechat_tui.core.captions import genres_of
from moviechat_tui.core.engine import FAILED, MAX_MESSAGE_CHARS, READY, ChatEngine, EngineError, Reply
from moviechat_tui.core.dialogue import Conditioning
from moviechat_tui.core.settings import DESCRIPTIONS, GenerationSettings, Setting, SettingsError
from moviechat_tui.core.store import Conversation, StoreError, UnknownConversation
from web.markup import markdown_pieces, text_to_markdown
from web.models import model_panel
from web.persona import persona_for_new, persona_panel
from web.resources import PageConfig, forget_model_error, page_config, shared_engine
from web.session import CURRENT, flash, open_conversation, show_flashes, show_in_url
from web.turns import short_time, show_message, start_pending

LIST_LIMIT = 50  # conversations in the sidebar; search finds the older ones
GENRES = ["action", "adventure", "animation", "biography", "comedy", "crime", "documentary", "drama", "family",
          "fantasy", "film-noir", "history", "horror", "music", "musical", "mystery", "romance", "sci-fi",
          "sport", "thriller", "war", "western"]  # the Cornell corpus' genres


# --- the open conversation ----------------------------------------------------------------


def current_conversation(engine: ChatEngine) -> Conversation | None:
    if CURRENT not in st.session_state:  # a new session: the URL may name a conversation
        try:
            st.session_state[CURRENT] = int(st.query_params.get("conversation", ""))
        except ValueError:
            st.session_state[CURRENT] = None
    conversation_id = st.session_state[CURRENT]
    conversation = None
    if conversation_id is not None:
        try:
            conversation = engine.get_conversation(conversation_id)
        except UnknownConversation:
            st.info(f"Conversation #{conversation_id} no longer exists (deleted elsewhere).")
            open_conversation(None)
    show_in_url(conversation.id if conversation else None)
    return conversation


# --- settings and genres -------------------------------------------------------------------


def _setting_key(name: str, conversation_id: int | None) -> str:
    return f"setting:{name}:{conversation_id or 'new'}"


def settings_from_widgets(base: GenerationSettings, conversation_id: int | None) -> GenerationSettings:
    data = base.to_dict()
    for setting in DESCRIPTIONS:
        key = _setting_key(setting.name, conversation_id)
        if key in st.session_state:
            data[setting.name] = st.session_state[key]
    return GenerationSettings.from_dict(data).validate()


def _save_settings(engine: ChatEngine, conversation_id: int) -> None:
    try:
        base = engine.settings_for(engine.get_conversation(conversation_id))
        engine.update_settings(conversation_id, settings=settings_from_widgets(base, conversation_id))
    except (SettingsError, StoreError) as exc:
        flash("error", f"Settings not saved: {exc}")


def _save_genres(engine: ChatEngine, conversation_id: int) -> None:
    try:
        engine.update_settings(conversation_id, genres=st.session_state[f"genres:{conversation_id}"])
    except StoreError as exc:
        flash("error", f"Genres not saved: {exc}")


def setting_widget(setting: Setting, value, key: str, save: dict) -> None:
    """A slider or number box for one decoding setting, from its description."""
    low, high = setting.bounds
    if setting.slider:
        st.slider(setting.label, float(low), float(high), min(max(float(value), low), high), setting.step,
                  key=key, help=setting.hint, **save)
    else:
        value = None if value is None else min(max(int(value), low), high)
        st.number_input(setting.label, int(low), int(high), value, int(setting.step), key=key, help=setting.hint,
                        placeholder=setting.blank or None, **save)


def settings_panel(engine: ChatEngine, current: Conversation | None) -> None:
    """Decoding settings and genres of the current conversation (or of the next new one)."""
    cid = current.id if current else None
    stored = engine.settings_for(current) if current else engine.settings
    save = {"on_change": _save_settings, "args": (engine, cid)} if current else {}
    with st.expander("Decoding settings"):
        for setting in DESCRIPTIONS:
            setting_widget(setting, getattr(stored, setting.name), _setting_key(setting.name, cid), save)
    stored_genres = genres_of(current.conditioning) if current else list(persona_for_new().genres)
    key = f"genres:{cid or 'new'}"
    chosen = st.session_state.setdefault(key, stored_genres)  # or a film's, just picked (web/persona.py)
    st.multiselect(
        "Genre steering", sorted(set(GENRES) | set(stored_genres) | set(chosen)), key=key, placeholder="no genres",
        help="the movie genres the reply should sound like",
        **({"on_change": _save_genres, "args": (engine, cid)} if current else {}),
    )


# --- the sidebar ---------------------------------------------------------------------------


def _rename(engine: ChatEngine, conversation_id: int) -> None:
    try:
        engine.rename(conversation_id, st.session_state[f"title:{conversation_id}"])
    except (EngineError, StoreError) as exc:
        flash("error", f"Not renamed: {exc}")


def _delete(engine: ChatEngine, conversation_id: int) -> None:
    try:
        engine.delete(conversation_id)
        flash("success", f"Deleted conversation #{conversation_id}.")
    except StoreError as exc:
        flash("error", f"Not deleted: {exc}")
    open_conversation(None)


def sidebar(engine: ChatEngine, config: PageConfig, current: Conversation | None) -> None:
    st.title(":material/movie: moviechat")
    st.button("New conversation", icon=":material/add:", width="stretch", on_click=open_conversation, args=(None,))
    query = st.text_input("Search", key="search", placeholder="title or words said",
                          label_visibility="collapsed", icon=":material/search:").strip()
    conversations = engine.list_conversations(query=query or None, limit=LIST_LIMIT + 1)
    for c in conversations[:LIST_LIMIT]:
        persona = Conditioning.from_dict(c.conditioning)
        who = persona.character or persona.movie
        st.button(
            text_to_markdown(c.title or f"Untitled #{c.id}") + (f" :gray[· {text_to_markdown(who)}]" if who else ""),
            key=f"open:{c.id}", width="stretch", type="secondary" if current and c.id == current.id else "tertiary",
            help=text_to_markdown(f"#{c.id} · {c.message_count} messages · updated {short_time(c.updated_at)}"
                                  + (f" · {persona.describe()}" if persona.has_persona else "")),
            on_click=open_conversation, args=(c.id,),
        )
    if not conversations:
        st.caption(text_to_markdown(f"Nothing matches “{query}”.") if query else "No saved conversations yet.")
    elif len(conversations) > LIST_LIMIT:
        st.caption(f"The {LIST_LIMIT} most recent; search to find older ones.")

    if current:
        with st.expander("This conversation"):
            key = f"title:{current.id}"
            st.text_input("Title", value=current.title, key=key, max_chars=200)
            st.button("Rename", on_click=_rename, args=(engine, current.id))
            if not st.session_state.get("confirm_delete"):
                st.button("Delete…", icon=":material/delete:",
                          on_click=lambda: st.session_state.update(confirm_delete=True))
            else:
                st.warning("Delete this conversation for good?")
                yes, no = st.columns(2)
                yes.button("Delete", type="primary", on_click=_delete, args=(engine, current.id))
                no.button("Keep", on_click=lambda: st.session_state.update(confirm_delete=False))
    persona_panel(engine, current)
    settings_panel(engine, current)
    model_panel(engine)
    model = engine.load().name if engine.model_loaded else engine.model_spec
    st.caption(text_to_markdown(f"model: {model}\ndatabase: {config.db_path}"))


# --- the main area -------------------------------------------------------------------------


def ensure_model(engine: ChatEngine) -> str | None:
    """Load the model (once per process); show and return the error if it can't be loaded."""
    if engine.model_status != READY:
        with st.spinner(f"Loading the model {engine.model_spec}… (the first time takes a while)"):
            try:
                engine.load()
            except Exception:  # engine.model_status is "failed", with the reason in one line
                pass
    if engine.model_status == FAILED:
        st.error(text_to_markdown(f"The model can't be loaded: {engine.model_error}"), icon=":material/error:")
        st.caption("Saved conversations can still be read and replayed, and another model can be picked "
                   "in the sidebar.")
        st.button("Try loading again", on_click=forget_model_error, args=(engine.model_spec,))
        return engine.model_error
    return None


def header(engine: ChatEngine, current: Conversation) -> str:
    """Title, details, view switch and downloads; returns the view ("Chat" or "Replay")."""
    st.subheader(text_to_markdown(current.title or f"Untitled #{current.id}"), anchor=False)
    persona = Conditioning.from_dict(current.conditioning)
    if persona.has_persona:
        st.markdown(f":material/theater_comedy: {text_to_markdown(persona.describe())}")
    genres = ", ".join(persona.genres) or "no genres"
    st.caption(text_to_markdown(f"#{current.id} · {current.message_count} messages · started "
                                f"{short_time(current.created_at)} · {current.model_spec} · {genres}"))
    view_col, md_col, json_col = st.columns([2, 1, 1], vertical_alignment="center")
    view = view_col.radio("View", ["Chat", "Replay"], key="view", horizontal=True, label_visibility="collapsed")
    stem = f"moviechat-{current.id}"
    md_col.download_button("Markdown", engine.export(current.id, "md"), f"{stem}.md", "text/markdown",
                           icon=":material/download:", on_click="ignore", width="stretch")
    json_col.download_button("JSON", engine.export(current.id, "json"), f"{stem}.json", "application/json",
                             icon=":material/download:", on_click="ignore", width="stretch")
    return view


def replay(engine: ChatEngine, current: Conversation) -> None:
    messages = engine.messages(current.id)
    if not messages:
        st.info("Nothing to replay yet: this conversation has no messages.")
        return
    shown = len(messages)
    if shown > 1:
        shown = st.slider("Turn", 1, len(messages), len(messages), help="step through the conversation")
    for m in messages[:shown]:
        show_message(m, details=True)


def reply_to(engine: ChatEngine, current: Conversation | None, text: str) -> None:
    """Send `text` and stream the reply; then rerun so the page shows the stored state."""
    if not text.strip():
        return  # empty input is ignored
    try:
        if current is None:  # the engine saves it with the new-conversation settings, once the text is sendable
            reply = engine.send(None, text, settings_from_widgets(engine.settings, None),
                                genres=st.session_state.get("genres:new"), persona=persona_for_new())
            open_conversation(reply.conversation_id)
        else:
            reply = engine.send(current.id, text)
    except (EngineError, SettingsError) as exc:
        st.warning(text_to_markdown(str(exc)))
        return
    except StoreError as exc:
        st.error(text_to_markdown(f"Not sent: {exc}"))
        return
    show_message(reply.user_message)
    stream(reply)


def stream(reply: Reply) -> None:
    """Stream a started reply into the page; then rerun so the page shows the stored state."""
    with st.chat_message("assistant"):
        pieces = iter(reply)
        try:
            st.write_stream(markdown_pieces(pieces))
        except Exception as exc:  # the user message is stored; the page goes on
            flash("error", f"The reply failed: {reply.error or exc}")
        finally:
            pieces.close()  # on Stop or a closed tab: the engine marks the reply cancelled
    for notice in reply.notices:
        flash("info", notice)
    st.rerun()


def main() -> None:
    config = page_config()
    try:
        engine, notice = shared_engine(config)
    except StoreError as exc:
        st.error(text_to_markdown(f"Can't open the conversation database: {exc}"), icon=":material/error:")
        return
    if notice:
        flash("warning", notice)
    current = current_conversation(engine)
    with st.sidebar:
        sidebar(engine, config, current)
    show_flashes()
    model_error = ensure_model(engine)
    view = header(engine, current) if current else "Chat"
    if view == "Replay":
        replay(engine, current)
        return
    if current is None:
        st.subheader("New conversation", anchor=False)
        if persona_for_new().has_persona:
            st.markdown(f":material/theater_comedy: {text_to_markdown(persona_for_new().describe())}")
        st.caption("Talk with characters from 600 films. Say something below to start a conversation; "
                   "saved conversations (from here or the terminal app) are in the sidebar.")
    # A regenerate or an edit asked for by a button: saved now, streamed below the branch it starts.
    pending = start_pending(engine, current.id) if current and model_error is None else None
    if current and pending is None and st.session_state.get("read_ahead_for") != current.id:
        st.session_state["read_ahead_for"] = current.id  # once per opening, in the background
        engine.read_ahead(current.id)
    for m in engine.messages(current.id) if current else []:
        show_message(m, engine=None if pending else engine, can_reply=model_error is None)
    text = st.chat_input("Chat is off until the model loads" if model_error else "Say something…",
                         disabled=model_error is not None, submit_mode="stop", max_chars=MAX_MESSAGE_CHARS)
    if pending is not None:
        stream(pending)
    elif text is not None and model_error is None:
        reply_to(engine, current, text)


st.set_page_config(page_title="moviechat", page_icon=":material/movie:", layout="centered")
try:
    main()
except StoreError as exc:  # e.g. the database locked by another program beyond the busy timeout
    st.error(text_to_markdown(f"Database problem: {exc}"), icon=":material/error:")
