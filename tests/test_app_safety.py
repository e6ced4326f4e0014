"""Access password, and no heavy ML package imported by any page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.auth import password_matches
from tests.app_helpers import open_page, texts

ROOT = Path(__file__).resolve().parent.parent


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
for page in ("views/new_run.py", "views/run.py", "views/compare.py"):
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
heavy = sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules)
print(heavy)
sys.exit(1 if heavy else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
