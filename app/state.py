"""Per-process and per-session state of the app: one cached Store, and the run a page is looking at."""

from __future__ import annotations

import streamlit as st

from db.session import Store

# Session keys shared between pages (one place, so a typo cannot split a flag in two).
RUN_KEY = "studio_run_id"  # the run the run page shows
CLONE_KEY = "studio_clone_config"  # a config dict handed from "clone" to the new-run form
AUTH_KEY = "studio_authenticated"
FLASH_KEY = "studio_flash"  # a one-shot message shown on the next page render


@st.cache_resource(show_spinner=False)
def _store(url: str | None) -> Store:
    return Store(url)


def get_store() -> Store:
    """The store named by STUDIO_DB_URL (or the default under STUDIO_HOME), opened once per process."""
    from db.session import default_url

    return _store(default_url())


def open_run(run_id: int) -> None:
    """Switch to the run page showing ``run_id``."""
    st.session_state[RUN_KEY] = int(run_id)
    st.switch_page("views/run.py", query_params={"run": str(run_id)})


def flash(message: str, kind: str = "success") -> None:
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    item = st.session_state.pop(FLASH_KEY, None)
    if item:
        kind, message = item
        getattr(st, kind)(message)
