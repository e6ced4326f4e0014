"""Access control: the studio is local by default; on a network it asks for STUDIO_PASSWORD first.

`studio up/app` refuse a non-local --host without STUDIO_PASSWORD; this gate is the second half: the app
shows nothing until the password matches. Every page calls ``require_access()`` itself (app/main.py does too),
and the pages live in app/views/, where Streamlit's automatic ``pages/`` discovery cannot serve them behind the
router's back. The comparison is constant-time (hmac.compare_digest), the unlocked flag lives in the browser
session only, and wrong attempts are rate-limited per client address with a growing delay and logged as events
(the address and the count, never what was typed).
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from app.state import AUTH_KEY

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass
class _Client:
    failures: int = 0
    locked_until: float = 0.0


@dataclass
class AttemptLimiter:
    """Wrong passwords per client: the first ``free`` cost nothing, then each one locks the client out for
    ``base_s * 2**(k - free)`` seconds (capped at ``max_s``). A success clears the client's count.

    Per client rather than global, so an attacker cannot lock the owner out; a reload or a new browser session
    keeps the count, because it lives in the server process, not the session."""

    free: int = 3
    base_s: float = 1.0
    max_s: float = 300.0
    _clients: dict[str, _Client] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds this client must still wait before its next attempt is even checked (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            c = self._clients.get(client)
            return max(0.0, c.locked_until - now) if c else 0.0

    def failure(self, client: str, now: float | None = None) -> tuple[int, float]:
        """Record a wrong password; returns (consecutive failures, seconds until the next attempt is allowed)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            c = self._clients.setdefault(client, _Client())
            c.failures += 1
            delay = 0.0 if c.failures < self.free else min(self.max_s, self.base_s * 2 ** (c.failures - self.free))
            c.locked_until = now + delay
            return c.failures, delay

    def success(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


@st.cache_resource(show_spinner=False)
def _limiter() -> AttemptLimiter:
    return AttemptLimiter()


def _server_address() -> str:
    try:
        return str(st.get_option("server.address") or "")
    except Exception:  # noqa: BLE001 - outside a server (AppTest) there is no address: treat as local
        return ""


def _client_address() -> str:
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - no client connection (AppTest)
        return "unknown"
    return ip if isinstance(ip, str) and ip else "unknown"


def _log(message: str, level: str) -> None:
    """An event in the store (no run), so `studio show`-style tools and operators see attempts."""
    from app.state import get_store
    from db.queue import add_event

    try:
        with get_store().write() as s:
            add_event(s, None, message, level)
    except Exception:  # noqa: BLE001 - a store problem must not open or break the gate
        pass


def has_access() -> bool:
    """Whether this session may see the studio now (no password to ask for, or already unlocked)."""
    if not os.environ.get("STUDIO_PASSWORD", ""):
        return _server_address() in LOCAL_HOSTS
    return bool(st.session_state.get(AUTH_KEY))


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
        limiter, client = _limiter(), _client_address()
        wait = limiter.retry_after(client)
        if wait > 0:
            # Not even checked: a correct guess during the lock-out must not be distinguishable from a wrong one.
            st.error(f"Too many wrong passwords from this address: try again in {wait:.0f} s.")
            st.stop()
        if password_matches(given, expected):
            limiter.success(client)
            _log(f"studio unlocked from {client}", "info")
            st.session_state[AUTH_KEY] = True
            st.rerun()
        count, delay = limiter.failure(client)
        _log(f"wrong studio password from {client} (attempt {count} in a row"
             + (f"; locked out for {delay:.0f} s)" if delay else ")"), "warning")
        st.error("Wrong password. Ask whoever started the studio for the value of STUDIO_PASSWORD."
                 + (f" Next attempt in {delay:.0f} s." if delay else ""))
    st.stop()
