"""`studio up` and `studio app` as a terminal, a supervisor or Docker would treat them: Ctrl-C, SIGTERM, SIGHUP,
a busy or impossible port. Real processes throughout; a running synthetic run shows what the engine did."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from db import queue
from db.models import RunStatus
from engine.config import SyntheticConfig
from engine.submission import submit_run
from engine.supervise import Child, Supervisor
from tests.helpers import ROOT, run_cli, studio_cmd, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), so a test can tell that none was orphaned."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _start(db_url: str, *args: str) -> subprocess.Popen:
    # A session of its own, like a terminal's job: a signal to its group is what Ctrl-C sends.
    return subprocess.Popen(studio_cmd(*args, "--db", db_url), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != "STUDIO_PASSWORD"})


def _long_run(store) -> int:
    return submit_run(store, SyntheticConfig(max_steps=200_000, checkpoint_every=0, n_val=200,
                                                   n_test_states=200, name="long"))


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm", "sighup"])
def test_studio_up_stops_gracefully_on_any_stop_signal(store, db_url, how):
    run_id = _long_run(store)
    port = _free_port()
    up = _start(db_url, "up", "--port", str(port))
    try:
        wait_for(lambda: _listening(port), timeout=90, what="the web app to listen")
        wait_for(lambda: queue.get_run(store, run_id).last_step >= 3, timeout=90, what="the run to make progress")
        below = _descendants(up.pid)
        assert len(below) >= 3  # engine, web app, run process
        if how == "ctrl_c":
            os.killpg(up.pid, signal.SIGINT)  # the terminal sends SIGINT to the whole foreground group
        else:
            up.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
        out, _ = up.communicate(timeout=180)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    assert up.returncode == 0, out
    assert not [p for p in below if _alive(p)], out  # nothing orphaned: engine, web app and run process all ended
    run = queue.get_run(store, run_id)
    msgs = [e.message for e in queue.events(store, run_id)]
    # One stop request, whatever mix of signals arrived: the step finished, a checkpoint, back in the queue.
    assert run.status == RunStatus.queued and run.resume, (run.status, msgs, out)
    assert any("re-queued; it resumes from its last checkpoint" in m for m in msgs), msgs
    assert not any("killed" in m or "out of memory" in m for m in msgs), msgs
    ckpt = queue.latest_checkpoint(store, run_id)
    assert ckpt is not None and ckpt.step == run.last_step


def test_studio_app_forwards_sigterm_to_the_web_app(store, db_url):
    port = _free_port()
    app = _start(db_url, "app", "--port", str(port))
    try:
        wait_for(lambda: _listening(port), timeout=90, what="the web app to listen")
        below = _descendants(app.pid)
        assert below
        app.send_signal(signal.SIGTERM)
        out, _ = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
    assert app.returncode == 0, out
    assert not [p for p in below if _alive(p)], out
    assert not _listening(port)


def test_studio_up_refuses_a_busy_or_impossible_port(db_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("up", "--port", str(port), "--db", db_url, timeout=60)
    assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr
    out = run_cli("app", "--port", "99999", "--db", db_url, timeout=60)
    assert out.returncode == 2 and "port 99999 is not a TCP port" in out.stderr, out.stderr


def test_a_child_that_dies_by_itself_stops_the_others_and_the_exit_is_nonzero(tmp_path, capsys):
    sleeper = Child("engine", [sys.executable, "-c", "import time; time.sleep(60)"], grace_s=10)
    failing = Child("web", [sys.executable, "-c", "print('Port 8501 is already in use', flush=True); raise "
                           "SystemExit(3)"])
    code = Supervisor([sleeper, failing], env=dict(os.environ), cwd=str(tmp_path)).run()
    assert code == 1
    err = capsys.readouterr().err
    assert "the web exited by itself (code 3): Port 8501 is already in use" in err
    assert "stopped engine too" in err
    assert sleeper.proc is not None and sleeper.proc.returncode == -signal.SIGTERM
