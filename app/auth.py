"""Access control: the studio is local by default; on a network it asks for STUDIO_PASSWORD first.

`studio up/app` refuse a non-local --host without STUDIO_PASSWORD; this gate is the second half: the app
shows nothing until the password matches. The comparison is constant-time (hmac.compare_digest), and the
unlocked flag lives in the browser session only.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

from app.state import AUTH_KEY

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _server_address() -> str:
    try:
        return str(st.get_option("server.address") or "")
    except Exception:  # noqa: BLE001 - outside a server (AppTest) there is no address: treat as local
        return ""


def require_access() -> None:
    """Stop the script unless this session may see the studio."""
    expected = os.environ.get("STUDIO_PASSWORD", "")
    if not expected:
        if _server_address() not in LOCAL_HOSTS:
            st.error("This studio is served on the network without a password. Restart it with STUDIO_PASSWORD "
                     "set (for example `STUDIO_PASSWORD=... studio up --host 0.0.0.0`).")
            st.stop()
        return
    if st.session_state.get(AUTH_KEY):
        return
    st.title("Alignment studio")
    st.write("This studio is password protected. Enter the access password set in STUDIO_PASSWORD.")
    with st.form("login"):
        given = st.text_input("Access password", type="password", key="login_password")
        submitted = st.form_submit_button("Unlock")
    if submitted:
        if password_matches(given, expected):
            st.session_state[AUTH_KEY] = True
            st.rerun()
        st.error("Wrong password. Ask whoever started the studio for the value of STUDIO_PASSWORD.")
    st.stop()
