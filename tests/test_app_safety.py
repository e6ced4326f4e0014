"""Access password, and no heavy ML package imported by any page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.auth import AttemptLimiter, password_matches
from tests.app_helpers import open_page, texts

ROOT = Path(__file__).resolve().parent.parent
VIEWS = sorted((ROOT / "app" / "views").glob("*.py"))


def test_password_gate(store, monkeypatch):
    monkeypatch.setenv("STUDIO_PASSWORD", "s3cret-pass")
    at = open_page()
    assert "password protected" in texts(at)
    assert "Runs" not in [t.value for t in at.title]  # nothing of the studio before the password
    at.text_input(key="login_password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in texts(at)
    assert "Runs" not in [t.value for t in at.title]
    at.text_input(key="login_password").input("s3cret-pass")
    at.button[0].click().run()
    assert not at.exception
    assert "Runs" in [t.value for t in at.title]


def _unlock(at: AppTest, password: str) -> AppTest:
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    return at


@pytest.mark.parametrize("view", [p.name for p in VIEWS])
def test_every_page_asks_for_the_password_when_run_by_itself(store, monkeypatch, view):
    # A page script run directly (what a page URL would reach if the router were bypassed) shows only the gate.
    monkeypatch.setenv("STUDIO_PASSWORD", "s3cret-pass")
    at = AppTest.from_file(str(ROOT / "app" / "views" / view), default_timeout=60).run()
    assert not at.exception
    assert "password protected" in texts(at)
    assert [t.value for t in at.title] == ["Alignment studio"]
    assert not at.get("plotly_chart") and not at.dataframe


def test_no_pages_folder_for_streamlit_to_discover():
    # Streamlit serves every script in a pages/ folder next to the entry script by its own URL when the entry
    # script stops before st.navigation (as the gate does): the views must not live there.
    assert not (ROOT / "app" / "pages").exists()
    assert VIEWS


def test_wrong_passwords_lock_the_client_out_with_a_growing_delay(store, monkeypatch):
    from db.queue import events

    monkeypatch.setenv("STUDIO_PASSWORD", "s3cret-pass")
    at = open_page()
    for _ in range(3):
        _unlock(at, "guess")
    assert "Next attempt in" in texts(at)
    _unlock(at, "s3cret-pass")  # right password, but inside the lock-out: not even checked
    assert "Too many wrong passwords" in texts(at)
    assert "Runs" not in [t.value for t in at.title]
    logged = [e.message for e in events(store)]
    assert sum("wrong studio password" in m for m in logged) == 3
    assert not any("guess" in m or "s3cret" in m for m in logged)  # what was typed never reaches the log


def test_attempt_limiter_delays():
    lim = AttemptLimiter(free=3, base_s=1.0, max_s=8.0)
    assert [lim.failure("a", now=0.0)[1] for _ in range(2)] == [0.0, 0.0]
    assert lim.failure("a", now=0.0) == (3, 1.0)
    assert lim.retry_after("a", now=0.5) == 0.5 and lim.retry_after("a", now=1.0) == 0.0
    assert [lim.failure("a", now=10.0)[1] for _ in range(4)] == [2.0, 4.0, 8.0, 8.0]  # doubles, then capped
    assert lim.retry_after("b", now=10.0) == 0.0  # another client is not locked out by the first
    lim.success("a")
    assert lim.retry_after("a", now=10.0) == 0.0 and lim.failure("a", now=10.0) == (1, 0.0)


def test_password_compare():
    assert password_matches("abc", "abc")
    assert not password_matches("abc", "abd")
    assert not password_matches("", "abc")
    assert password_matches("päss", "päss")


def test_pages_import_no_heavy_ml_packages(tmp_path):
    code = f"""
import os, sys
os.environ["STUDIO_HOME"] = {str(tmp_path)!r}
os.environ.pop("STUDIO_DB_URL", None)
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / 'app' / 'main.py')!r}, default_timeout=60).run()
for page in ("views/new_run.py", "views/run.py", "views/compare.py", "views/playground.py"):
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
heavy = sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules)
print(heavy)
sys.exit(1 if heavy else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
