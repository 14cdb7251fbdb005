"""The sidebar's "Who you talk to": a film of the shipped cast, one of its characters, and who you are.

Every field also takes typed text (a film or character not in the cast, any name for you). The choice
is stored with the open conversation at once (from its next reply on) or kept in the session for the
next new conversation. Picking a film of the cast sets its genres.
"""

from __future__ import annotations

import streamlit as st

from moviechat_tui.core.cast import Movie, fold, load_cast
from moviechat_tui.core.dialogue import Conditioning
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.store import Conversation, StoreError
from web.session import flash

NEW = "persona:new"  # session key: the persona (a to_dict) of the next new conversation


@st.cache_resource(show_spinner=False)
def _films() -> dict[str, Movie]:
    return {m.label: m for m in load_cast().movies}


def _key(part: str, conversation_id: int | None) -> str:
    return f"persona:{part}:{conversation_id or 'new'}"


def persona_for_new() -> Conditioning:
    return Conditioning.from_dict(st.session_state.get(NEW))


def current_persona(current: Conversation | None) -> Conditioning:
    return Conditioning.from_dict(current.conditioning) if current else persona_for_new()


def _chosen(stored: Conditioning, conversation_id: int | None, film_changed: bool) -> Conditioning:
    """The persona the widgets now say (a new film drops the character, who belonged to the old one)."""
    label = st.session_state.get(_key("film", conversation_id))
    film = _films().get(label) if label else None
    character = "" if film_changed else st.session_state.get(_key("character", conversation_id)) or ""
    partner = st.session_state.get(_key("partner", conversation_id)) or ""
    if film is not None:  # a character of the film is spelled as in the cast; a new film brings its genres
        partner = next((c.name for c in film.characters if fold(c.name) == fold(partner)), partner)
        return Conditioning(character, partner, film.title, film.year, film.genres if film_changed else stored.genres)
    if label and label == stored.film:  # the stored film, not in the cast
        return Conditioning(character, partner, stored.movie, stored.year, stored.genres)
    return Conditioning(character, partner, label or "", None, stored.genres)


def _save(engine: ChatEngine, conversation_id: int | None, film_changed: bool = False) -> None:
    stored = current_persona(engine.get_conversation(conversation_id) if conversation_id else None)
    persona = _chosen(stored, conversation_id, film_changed)
    # Set (not dropped) so that the browser shows it: a new film has no character yet, and its genres.
    st.session_state[_key("character", conversation_id)] = persona.character or None
    st.session_state[f"genres:{conversation_id or 'new'}"] = list(persona.genres)
    if conversation_id is None:
        st.session_state[NEW] = persona.to_dict()
        return
    try:
        engine.update_settings(conversation_id, persona=persona)
    except StoreError as exc:
        flash("error", f"Not saved: {exc}")


def _clear(engine: ChatEngine, conversation_id: int | None) -> None:
    for part in ("film", "character", "partner"):
        st.session_state[_key(part, conversation_id)] = "" if part == "partner" else None
    stored = current_persona(engine.get_conversation(conversation_id) if conversation_id else None)
    plain = Conditioning(genres=stored.genres)
    if conversation_id is None:
        st.session_state[NEW] = plain.to_dict()
    else:
        engine.update_settings(conversation_id, persona=plain)


def persona_panel(engine: ChatEngine, current: Conversation | None) -> None:
    cid = current.id if current else None
    stored = current_persona(current)
    films = list(_films())
    if stored.film and stored.film not in _films():
        films.insert(0, stored.film)
    film = _films().get(stored.film)
    names = [c.name for c in film.characters] if film else []
    if stored.character and stored.character not in names:
        names.insert(0, stored.character)
    scope = f"conversation #{cid}, from its next reply" if cid else "the next new conversation"
    # The widgets start from what is stored; after that their state is theirs (and _save's).
    st.session_state.setdefault(_key("film", cid), stored.film or None)
    st.session_state.setdefault(_key("character", cid), stored.character or None)
    st.session_state.setdefault(_key("partner", cid), stored.partner)
    with st.expander("Who you talk to", expanded=cid is None):  # open, as an invitation, before a chat starts
        st.selectbox("Film", films, index=None, key=_key("film", cid), accept_new_options=True,
                     placeholder=f"any film: type to search {len(_films())}", on_change=_save, args=(engine, cid, True),
                     help="a film of the Cornell corpus, or type another title")
        st.selectbox("Character", names, index=None, key=_key("character", cid), accept_new_options=True,
                     on_change=_save, args=(engine, cid),
                     placeholder="pick one of the film's characters, or type a name" if film else "type a name",
                     help="who the bot plays")
        st.text_input("You are", key=_key("partner", cid), max_chars=80,
                      placeholder="yourself, or one of the film's characters", on_change=_save, args=(engine, cid))
        st.caption(f"For {scope}.")
        if stored.has_persona:
            st.button("No persona", icon=":material/person_off:", on_click=_clear, args=(engine, cid),
                      help="talk to the plain movie bot again")
