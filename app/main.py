"""Entry point of the studio's web app (`studio app` / `studio up`): access check, then page routing only."""

import sys
from pathlib import Path

# Streamlit puts app/ on sys.path; the pages import the project's packages (app, db, engine) from the root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app.auth import has_access, require_access  # noqa: E402

st.set_page_config(page_title="Alignment studio", page_icon=":material/balance:", layout="wide")
# The router is declared before the gate so the address a visitor opened (/new_run, /run?run=3) survives the
# login; it only picks the page, which runs in .run() after the gate. Before the password no page is listed.
nav = st.navigation([
    st.Page("views/runs.py", title="Runs", icon=":material/list:", default=True),
    st.Page("views/new_run.py", title="New run", icon=":material/add_circle:"),
    st.Page("views/run.py", title="Run", icon=":material/monitoring:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/playground.py", title="Playground", icon=":material/chat:"),
    st.Page("views/results.py", title="Results", icon=":material/analytics:"),
], position="sidebar" if has_access() else "hidden")
require_access()
nav.run()
