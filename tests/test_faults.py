"""Fault injection through real processes: engines and run processes stopped, killed and continued at the worst
moments. Every test ends with the same checks: SQLite's integrity check passes, no (run, key, step) row is
stored twice, and no run is left running.

Runs use the synthetic experiment (real training, no model, milliseconds per step), with enough steps to
outlast the faults.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import queue
from db.models import Checkpoint, Event, GroupStat, MetricPoint, Run, RunStatus
from db.session import Store
from engine.config import SyntheticConfig
from db.paths import run_folder, run_output_log
from engine.run_process import EXIT_LEASE_LOST
from tests.helpers import run_cli, start_engine, wait_for
from engine.submission import submit_run

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux process control")

PR_SET_CHILD_SUBREAPER = 36
KEYS = ("train/loss", "val/worst_group_loss", "reward_error/worst")


def synthetic(steps: int, **kw) -> SyntheticConfig:
    # Small validation and test sets: a few milliseconds a step, so the runs outlast the faults, not the budget.
    kw.setdefault("n_val", 50)
    kw.setdefault("n_test_states", 50)
    kw.setdefault("checkpoint_every", 25)
    kw.setdefault("seed", 7)
    return SyntheticConfig(max_steps=steps, **kw)


def db_path(store: Store) -> str:
    return store.url.split("///", 1)[1]


def run(store: Store, run_id: int) -> Run:
    return queue.get_run(store, run_id)


def series(store: Store, run_id: int, key: str) -> list[tuple[int, float]]:
    with store.read() as s:
        return list(s.execute(select(MetricPoint.step, MetricPoint.value)
                              .where(MetricPoint.run_id == run_id, MetricPoint.key == key).order_by(MetricPoint.step)))


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z", "X")


def write_lock_free(path: str) -> bool:
    con = sqlite3.connect(path, timeout=0.3, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def sigstop_between_writes(path: str, pid: int) -> None:
    """SIGSTOP a process, but not inside a write transaction: SQLite has one writer, and a stopped process
    holding the write lock would stall every other writer on the file (that is SQLite, not the engine)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) in ("T", "t"), timeout=5, interval=0.01, what="the process to stop")
        if write_lock_free(path):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.03)
    raise AssertionError("the process always held the write lock")


def kill_engine(engine: subprocess.Popen) -> None:
    engine.kill()
    engine.wait(timeout=30)  # reaped: a zombie would still look alive to a pid check


def kill_together(engine: subprocess.Popen, pid: int) -> None:
    """SIGKILL an engine and its run process at the same instant, as a power cut or the OOM killer taking the
    whole group would: the engine is frozen first, so it cannot record the child's death, and the child dies
    before its parent-death signal could let it hand the run back."""
    os.kill(engine.pid, signal.SIGSTOP)
    wait_for(lambda: proc_state(engine.pid) in ("T", "t"), timeout=5, interval=0.01, what="the engine to stop")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    kill_engine(engine)
    wait_for(lambda: gone(pid), timeout=10, what="the run process to die")


def stop_engine(engine: subprocess.Popen) -> str:
    if engine.poll() is None:
        engine.send_signal(signal.SIGTERM)
    out, _ = engine.communicate(timeout=120)
    return out


@contextmanager
def adopting_orphans():
    """This test process becomes the parent of processes orphaned below it (the run process of an engine we
    kill), so that it can read their exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper here")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def exit_code_of_adopted(pid: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"process {pid} did not exit within {timeout:.0f} s")


def snapshot(store: Store, run_id: int) -> dict:
    """Everything a run process could have written about its run (the worker's heartbeat aside)."""
    with store.read() as s:
        r = s.get(Run, run_id)
        counted = {t.__name__: s.scalar(select(func.count()).select_from(t).where(t.run_id == run_id))
                   for t in (MetricPoint, GroupStat, Checkpoint, Event)}
        events = [e.message for e in s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id))]
    folder = run_folder(run_id, r.folder_token)
    # The process output file is left out: a stopped process that lost its run says so there, and should.
    files = {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
             if p.name != "process.log"} if folder.exists() else {}
    return {"counts": counted, "events": events, "files": files,
            "run": (r.status, r.last_step, r.lease, r.error, r.attempts, r.pid)}


def assert_store_sound(store: Store) -> None:
    store.dispose()
    con = sqlite3.connect(db_path(store))
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        for table, cols in (("metric_points", "run_id, key, step"), ("group_stats", 'run_id, step, "group"'),
                            ("checkpoints", "run_id, step")):
            dupes = con.execute(f"SELECT {cols}, COUNT(*) FROM {table} GROUP BY {cols} HAVING COUNT(*) > 1").fetchall()
            assert dupes == [], (table, dupes[:5])
        stuck = con.execute("SELECT id, status FROM runs WHERE status IN ('running', 'queued')").fetchall()
        assert stuck == [], stuck
        for rid, last, total in con.execute("SELECT id, last_step, total_steps FROM runs WHERE status='completed'"):
            steps = [s for (s,) in con.execute("SELECT step FROM metric_points WHERE run_id=? AND key='train/loss' "
                                               "ORDER BY step", (rid,))]
            assert steps == list(range(1, total + 1)) and last == total, (rid, steps[:3], len(steps), last)
    finally:
        con.close()


def progressing(store: Store, run_id: int, attempts: int, past: int = 0):
    def check() -> bool:
        r = run(store, run_id)
        return r.status == RunStatus.running and r.attempts == attempts and r.last_step > past and r.pid is not None
    return check


@pytest.mark.slow
def test_a_stopped_run_process_taken_over_by_a_new_engine_writes_nothing_when_continued(store, db_url):
    rid = submit_run(store, synthetic(1000))
    with adopting_orphans():
        first = start_engine(db_url)
        try:
            wait_for(lambda: queue.latest_checkpoint(store, rid) is not None and run(store, rid).last_step >= 30,
                     timeout=60, what="progress and a checkpoint")
            old = run(store, rid).pid
            sigstop_between_writes(db_path(store), old)
            stopped_at = run(store, rid).last_step
        finally:
            kill_engine(first)  # its run process, stopped, is now an orphan (adopted by this test)
        second = start_engine(db_url, "--stale-after", "5")
        new = None
        try:
            # The old process is alive (stopped), so the new engine waits out the 5 s stale window, then resumes
            # the run from its last checkpoint in a process of its own.
            wait_for(progressing(store, rid, attempts=2, past=stopped_at), timeout=60, what="the new engine's run")
            new = run(store, rid).pid
            assert new != old
            sigstop_between_writes(db_path(store), new)  # hold the new owner still: every change is the old one's
            before = snapshot(store, rid)
            os.kill(old, signal.SIGCONT)
            assert exit_code_of_adopted(old) == EXIT_LEASE_LOST
            assert snapshot(store, rid) == before  # not a row, not an event, not a file
            log = run_output_log(rid, run(store, rid).folder_token).read_text()
            assert "stopping without writing" in log  # it said why it stopped, where the user reads run output
            os.kill(new, signal.SIGCONT)
            wait_for(lambda: run(store, rid).status.finished, timeout=60, what="the run to finish")
        finally:
            for pid in {old, new} - {None}:  # a failed assertion must not leave them stopped
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            out = stop_engine(second)
    r = run(store, rid)
    assert r.status == RunStatus.completed and r.attempts == 2, (r.status, r.error, out)
    messages = [e.message for e in queue.events(store, rid)]
    assert sum(m == "completed" for m in messages) == 1
    assert not any("UNIQUE" in m or "failed" in m for m in messages), messages
    assert_store_sound(store)


@pytest.mark.slow
def test_engine_and_run_process_killed_together_and_restarted_at_once_three_times(store, db_url):
    rid = submit_run(store, synthetic(1000))
    seen = 0
    for attempt in range(1, 4):
        # The default 60 s stale window: the wait below is shorter, so recovery must not need it.
        engine = start_engine(db_url)
        try:
            wait_for(progressing(store, rid, attempts=attempt, past=seen), timeout=30,
                     what=f"attempt {attempt} to train")
            seen = run(store, rid).last_step
        except BaseException:
            kill_engine(engine)
            raise
        kill_together(engine, run(store, rid).pid)
        assert run(store, rid).status == RunStatus.running  # left behind; the next engine takes it back at once
    out = run_cli("engine", "--once", "--db", db_url, "--poll", "0.2", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    r = run(store, rid)
    assert r.status == RunStatus.completed and r.attempts == 4, (r.status, r.error)
    messages = [e.message for e in queue.events(store, rid)]
    assert sum("re-queued to resume" in m for m in messages) == 3, messages
    assert_store_sound(store)


@pytest.mark.slow
def test_cancel_resume_and_delete_of_orphaned_runs(store, db_url, studio_home):
    rid = submit_run(store, synthetic(100_000))

    def orphan(attempt: int) -> None:
        engine = start_engine(db_url)
        try:
            wait_for(progressing(store, rid, attempts=attempt), timeout=30, what=f"attempt {attempt} to train")
            if attempt == 1:  # while its engine lives, a running run is neither deleted nor resumed
                for cmd in ("delete", "resume"):
                    out = run_cli(cmd, str(rid), "--yes", "--db", db_url) if cmd == "delete" else \
                        run_cli(cmd, str(rid), "--db", db_url)
                    assert out.returncode == 2 and "running" in out.stderr, out.stderr
        except BaseException:
            kill_engine(engine)
            raise
        kill_together(engine, run(store, rid).pid)
        assert run(store, rid).status == RunStatus.running

    orphan(1)
    health = run_cli("health", "--max-age", "60", "--db", db_url)
    assert health.returncode == 1, health.stdout  # its heartbeat is recent, but its process is gone
    out = run_cli("resume", str(rid), "--db", db_url)
    assert out.returncode == 0, out.stderr
    assert run(store, rid).status == RunStatus.queued and run(store, rid).lease is None

    orphan(2)
    out = run_cli("cancel", str(rid), "--db", db_url)
    assert out.returncode == 0 and "cancelled (its engine is gone)" in out.stdout, out.stdout + out.stderr
    assert run(store, rid).status == RunStatus.cancelled

    assert run_cli("resume", str(rid), "--db", db_url).returncode == 0
    orphan(3)
    folder = run_folder(rid, run(store, rid).folder_token)
    assert (folder / "checkpoints").is_dir()
    out = run_cli("delete", str(rid), "--yes", "--db", db_url)
    assert out.returncode == 0, out.stderr
    assert not folder.exists()
    with store.read() as s:
        assert s.get(Run, rid) is None

    # An orphan whose process still exists, stopped: cancelled once its heartbeat is stale, and when it is
    # continued it stops without writing.
    zid = submit_run(store, synthetic(100_000))
    with adopting_orphans():
        engine = start_engine(db_url)
        try:
            wait_for(lambda: run(store, zid).last_step >= 5 and run(store, zid).pid, timeout=30, what="training")
            zombie = run(store, zid).pid
            sigstop_between_writes(db_path(store), zombie)
        finally:
            kill_engine(engine)
        try:
            # Its process exists: as far as anyone can tell it may come back, until its heartbeat is stale.
            assert queue.request_cancel(store, zid, stale_after_s=30) == "cancel requested"
            wait_for(lambda: queue.heartbeat_age(run(store, zid)) > 3, timeout=10, what="a stale heartbeat")
            assert queue.request_cancel(store, zid, stale_after_s=3) == "cancelled (its engine is gone)"
            before = snapshot(store, zid)
        finally:
            os.kill(zombie, signal.SIGCONT)
        assert exit_code_of_adopted(zombie) == EXIT_LEASE_LOST
        assert snapshot(store, zid) == before
    assert run(store, zid).status == RunStatus.cancelled
    assert_store_sound(store)


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(store, db_url):
    cfg = synthetic(800, checkpoint_every=40)
    reference = submit_run(store, cfg)
    assert run_cli("engine", "--once", "--db", db_url, "--poll", "0.2").returncode == 0

    rid = submit_run(store, cfg)
    # 1) The engine dies alone: its run process is told (parent-death signal), finishes its step, checkpoints
    #    and puts the run back in the queue by itself, with no engine running.
    engine = start_engine(db_url)
    try:
        wait_for(progressing(store, rid, attempts=1, past=50), timeout=30, what="training")
        pid = run(store, rid).pid
    finally:
        kill_engine(engine)
    wait_for(lambda: run(store, rid).status == RunStatus.queued, timeout=30, what="the run to hand itself back")
    wait_for(lambda: gone(pid), timeout=10, what="the run process to exit")
    r = run(store, rid)
    assert r.resume and queue.latest_checkpoint(store, rid).step == r.last_step
    # 2) The engine and the run process die together, mid-step; the next engine takes the run back at once.
    engine = start_engine(db_url)
    try:
        wait_for(progressing(store, rid, attempts=2, past=r.last_step + 30), timeout=30, what="training again")
    except BaseException:
        kill_engine(engine)
        raise
    kill_together(engine, run(store, rid).pid)
    out = run_cli("engine", "--once", "--db", db_url, "--poll", "0.2", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    r = run(store, rid)
    assert r.status == RunStatus.completed and r.attempts == 3, (r.status, r.error)
    for key in KEYS:
        assert series(store, rid, key) == series(store, reference, key), key  # step for step, value for value
    with store.read() as s:
        def weights(run_id: int) -> list[tuple]:
            return list(s.execute(select(GroupStat.step, GroupStat.group, GroupStat.weight)
                                  .where(GroupStat.run_id == run_id).order_by(GroupStat.step, GroupStat.group)))
        assert weights(rid) == weights(reference)
    assert_store_sound(store)
