"""The sidebar's model switch: any spec `moviechat-tui models` lists, or a typed one.

The engine loads it in the background (ChatEngine.switch_model) while the current model keeps
answering; a small fragment polls until it is ready and then reruns the page. The engine is the
page's (shared by its browser tabs), so a switch applies to every tab from its next reply.
"""

from __future__ import annotations

import streamlit as st

from moviechat_tui.core.engine import ChatEngine, EngineError
from moviechat_tui.core.specs import describe_specs
from web.markup import text_to_markdown
from web.resources import forget_model_error
from web.session import flash

POLL_SECONDS = 1.0


@st.cache_data(ttl=60, show_spinner=False)
def known_specs() -> list[str]:
    return [info.spec for info in describe_specs()]


def _switch(engine: ChatEngine, key: str) -> None:
    spec = (st.session_state.get(key) or "").strip()
    if not spec or spec == engine.model_spec:
        return
    forget_model_error(spec)  # a spec that failed before is tried again
    try:
        engine.switch_model(spec)
    except EngineError as exc:
        flash("error", str(exc))


def model_panel(engine: ChatEngine) -> None:
    current = engine.model_spec
    switch = engine.model_switch
    loading = switch is not None and not switch.done
    pending = switch.spec if switch is not None and switch.spec != current else None  # loading or failed
    key = f"model:{current}"  # a new widget once the model changed (here or in another tab)
    if pending and not loading and st.session_state.get(key) == pending:
        st.session_state[key] = current  # it failed: the box shows the model that answers
    specs = [current, *(s for s in [pending, *known_specs()] if s and s != current)]
    with st.expander("Model", expanded=loading):
        st.selectbox("Model", list(dict.fromkeys(specs)), index=0, key=key, accept_new_options=True,
                     on_change=_switch, args=(engine, key), disabled=loading,
                     help="any spec `moviechat-tui models` lists, a model directory or a Hugging Face id; "
                          "it loads in the background while the current model answers")
        if loading:
            st.fragment(_loading, run_every=POLL_SECONDS)(engine)
        elif pending:
            st.error(text_to_markdown(f"{switch.spec} did not load: {switch.error}. Still answering with "
                                      f"{current}."), icon=":material/error:")


def _loading(engine: ChatEngine) -> None:
    switch = engine.model_switch
    if switch is None or switch.done:
        st.rerun()  # the whole page: its captions and the model line show the outcome
    st.info(text_to_markdown(f"Loading {switch.spec}… {switch.previous} answers until it is ready."),
            icon=":material/hourglass_top:")
