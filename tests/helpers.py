"""Helpers for tests that drive the CLI and the engine as separate processes, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def studio_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(studio_cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_user_error(out: subprocess.CompletedProcess, *words: str) -> None:
    """A CLI refusal as a user sees it: exit code 2, one "error: ..." line naming ``words``, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    line = out.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    for w in words:
        assert w in line, line


def start_engine(db_url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(studio_cmd("engine", "--db", db_url, "--poll", "0.2", *extra), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
