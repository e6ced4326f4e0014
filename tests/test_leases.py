"""Run ownership in the store: leases on every write of a run process, orphan detection and recovery, orphan
cancel/resume/delete, worker liveness, and run folders that a reused id never inherits. In one process: the
fault-injection suite (test_faults.py) does the same through real engines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from db import queue, writes
from db.migrate import upgrade
from db.models import (Checkpoint, ComparisonOutput, Evaluation, Event, MetricPoint, Run, RunStatus, Worker,
                       utcnow)
from db.queue import LeaseLost
from db.session import Store
from engine.config import SyntheticConfig
from db.paths import remove_run_files, run_export_cache, run_folder
from engine.runs.context import RunContext
from engine.submission import submit_run

pytestmark = pytest.mark.backends("sqlite", "postgresql")

HOST = socket.gethostname()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no such process now (reuse within a test is vanishingly unlikely)


def _claim(store: Store, worker_id: str = "w-test") -> Run:
    submit_run(store, SyntheticConfig(max_steps=5))
    run = queue.claim_next_run(store, worker_id)
    assert run is not None and run.lease
    return run


def _counts(store: Store, run_id: int) -> dict[str, object]:
    with store.read() as s:
        out: dict[str, object] = {t.__name__: s.scalar(select(func.count()).select_from(t).where(t.run_id == run_id))
                                  for t in (MetricPoint, Checkpoint, Evaluation, ComparisonOutput, Event)}
        r = s.get(Run, run_id)
        out["run"] = (r.status, r.last_step, r.lease, r.error, r.pid)
    return out


def test_each_claim_gets_a_new_lease_and_ending_the_claim_clears_it(store):
    run = _claim(store)
    queue.finish_run(store, run.id, RunStatus.queued, requeue=True, lease=run.lease)
    assert queue.get_run(store, run.id).lease is None
    again = queue.claim_next_run(store, "w-other")
    assert again.id == run.id and again.lease and again.lease != run.lease


def test_every_write_with_a_lost_lease_raises_and_writes_nothing(store):
    run = _claim(store)
    writes.write_step(store, run.id, 1, {"loss": 1.0}, [{"group": "g", "weight": 1.0}], lease=run.lease)
    queue.heartbeat(store, run.id, "w-test", run.lease)
    before = _counts(store, run.id)
    ctx = RunContext(store, run.id, SyntheticConfig(max_steps=5), resume=False, lease="not-the-lease")
    attempts = [
        lambda: writes.write_step(store, run.id, 2, {"loss": 2.0}, lease="not-the-lease"),
        lambda: writes.truncate_after(store, run.id, 0, lease="not-the-lease"),
        lambda: writes.record_checkpoint(store, run.id, 1, "/x", lease="not-the-lease"),
        lambda: writes.record_evaluation(store, run_id=run.id, model="m", benchmark="b", dataset_version="v",
                                         metrics={"a": 1.0}, lease="not-the-lease"),
        lambda: writes.write_comparison(store, run.id, [], lease="not-the-lease"),
        lambda: queue.finish_run(store, run.id, RunStatus.completed, lease="not-the-lease"),
        lambda: queue.heartbeat(store, run.id, "w-test", "not-the-lease"),
        lambda: queue.set_run_pid(store, run.id, 12345, "not-the-lease"),
        lambda: ctx.log_step(2, {"loss": 2.0}),
        lambda: ctx.event("hello"),
        lambda: ctx.start_step(),
        lambda: ctx.checkpoint_dir(1),
        lambda: ctx.record_evaluation("b", {"a": 1.0}, model="m", dataset_version="v"),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(LeaseLost):
            attempt()
        assert _counts(store, run.id) == before, i
    assert not (ctx.run_dir / "checkpoints").exists()  # no checkpoint folder made either


def test_the_right_lease_writes_until_the_run_is_taken_back(store):
    run = _claim(store)
    ctx = RunContext(store, run.id, SyntheticConfig(max_steps=5), resume=False, lease=run.lease)
    assert ctx.start_step() == 0
    ctx.log_step(1, {"loss": 1.0})
    ctx.record_checkpoint(1, ctx.checkpoint_dir(1))
    ctx.event("step one")
    # The engine is declared dead (stale heartbeat): recovery ends the claim, and the process is fenced off.
    with store.write() as s:
        s.execute(update(Run).where(Run.id == run.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    assert queue.recover_stale_runs(store, 60, requeue=True) == [run.id]
    with pytest.raises(LeaseLost):
        ctx.log_step(2, {"loss": 2.0})
    with pytest.raises(LeaseLost):
        queue.finish_run(store, run.id, RunStatus.failed, error="late", lease=run.lease)
    r = queue.get_run(store, run.id)
    assert r.status == RunStatus.queued and r.resume and r.lease is None and r.last_step == 1 and r.error is None


def test_writes_without_a_lease_keep_working_for_tools_and_tests(store):
    rid = submit_run(store, SyntheticConfig(max_steps=3))
    writes.write_step(store, rid, 1, {"loss": 1.0})
    writes.truncate_after(store, rid, 0)
    assert queue.get_run(store, rid).last_step == 0


def _register(store: Store, worker_id: str, pid: int, host: str = HOST, beat_age_s: float = 0.0) -> None:
    queue.register_worker(store, worker_id, host, pid)
    with store.write() as s:
        s.execute(update(Worker).where(Worker.id == worker_id)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=beat_age_s)))


def test_a_run_of_an_engine_gone_from_this_host_is_recovered_without_waiting(store):
    dead = _dead_pid()
    _register(store, "w-dead", dead)
    run = _claim(store, "w-dead")
    queue.set_run_pid(store, run.id, _dead_pid(), run.lease)
    with store.read() as s:
        assert "is gone" in queue.orphan_reason(s, s.get(Run, run.id))
    assert queue.recover_stale_runs(store, 3600, requeue=True) == [run.id]
    with store.read() as s:
        assert s.get(Worker, "w-dead").stopped_at is not None  # and the dead worker is marked stopped


def test_a_live_run_process_or_another_host_waits_for_the_stale_window(store):
    _register(store, "w-dead", _dead_pid())
    run = _claim(store, "w-dead")
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Its engine is gone but the run process lives on: it may still finish its step and hand the run back.
        queue.set_run_pid(store, run.id, survivor.pid, run.lease)
        _register(store, "w-far", _dead_pid(), host="another-host")
        far = _claim(store, "w-far")
        assert queue.recover_stale_runs(store, 3600, requeue=True) == []
    finally:
        survivor.kill()
        survivor.wait()
    assert queue.recover_stale_runs(store, 0, requeue=False) == sorted([run.id, far.id])
    assert all(queue.get_run(store, r).status == RunStatus.failed for r in (run.id, far.id))


def test_a_live_engine_keeps_its_run(store):
    _register(store, "w-me", os.getpid())
    run = _claim(store, "w-me")
    assert queue.recover_stale_runs(store, 60, requeue=True, own_worker_id="w-me") == []
    assert queue.request_cancel(store, run.id) == "cancel requested"
    with pytest.raises(queue.QueueError, match="running"):
        queue.delete_run(store, run.id)
    with pytest.raises(queue.QueueError, match="running"):
        queue.resume_run(store, run.id)
    assert queue.get_run(store, run.id).lease == run.lease


def test_an_orphan_is_cancelled_resumed_and_deleted_at_once(store):
    _register(store, "w-dead", _dead_pid())
    ids = []
    for _ in range(3):
        run = _claim(store, "w-dead")
        writes.write_step(store, run.id, 1, {"loss": 1.0}, lease=run.lease)
        ids.append((run.id, run.lease))
    (a, la), (b, lb), (c, lc) = ids
    assert queue.request_cancel(store, a) == "cancelled (its engine is gone)"
    queue.resume_run(store, b)
    folder = run_folder(c, queue.get_run(store, c).folder_token)
    (folder / "checkpoints").mkdir(parents=True)
    assert queue.delete_run(store, c) == []
    assert not folder.exists()
    ra, rb = queue.get_run(store, a), queue.get_run(store, b)
    assert ra.status == RunStatus.cancelled and ra.lease is None
    assert rb.status == RunStatus.queued and rb.resume and rb.lease is None
    for rid, lease in ids:  # a process of any of them that is still around can write nothing
        with pytest.raises(LeaseLost):
            writes.write_step(store, rid, 2, {"loss": 2.0}, lease=lease)


def test_a_stale_orphan_asked_to_cancel_is_cancelled_by_recovery(store):
    run = _claim(store, "w-unknown")
    queue.request_cancel(store, run.id)
    with store.write() as s:
        s.execute(update(Run).where(Run.id == run.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    assert queue.recover_stale_runs(store, 60, requeue=True) == [run.id]
    assert queue.get_run(store, run.id).status == RunStatus.cancelled


def test_health_never_counts_a_dead_engine_of_this_host(store):
    _register(store, "w-dead", _dead_pid())
    _register(store, "w-me", os.getpid())
    _register(store, "w-far", 1, host="another-host")
    _register(store, "w-silent", os.getpid(), beat_age_s=3600)
    assert sorted(w.id for w in queue.live_workers(store, within_s=60)) == ["w-far", "w-me"]
    with store.read() as s:
        stopped = {w.id for w in s.scalars(select(Worker).where(Worker.stopped_at.is_not(None)))}
    assert stopped == {"w-dead", "w-silent"}
    queue.heartbeat(store, None, "w-silent")  # it was only stalled: its next heartbeat makes it alive again
    assert "w-silent" in {w.id for w in queue.live_workers(store, within_s=60)}


def test_an_engine_pid_that_is_now_ours_is_a_dead_engine(store):
    # A restarted container's engine often gets its predecessor's pid (1 under tini's child, say).
    _register(store, "w-before-restart", os.getpid())
    run = _claim(store, "w-before-restart")
    assert queue.recover_stale_runs(store, 3600, requeue=True, own_worker_id="w-after-restart") == [run.id]


def test_a_reused_run_id_gets_a_new_folder_and_delete_removes_the_old_one(store, studio_home, backend):
    first = submit_run(store, SyntheticConfig(max_steps=1))
    token = queue.get_run(store, first).folder_token
    folder = run_folder(first, token)
    (folder / "checkpoints" / "step-0000001").mkdir(parents=True)
    (folder / "checkpoints" / "step-0000001" / "state.json").write_text("{}")
    (run_export_cache(first, token) / "step-0000001").mkdir(parents=True)
    queue.delete_run(store, first)
    assert not folder.exists() and not run_export_cache(first, token).exists()
    second = submit_run(store, SyntheticConfig(max_steps=1))
    if backend == "sqlite":
        assert second == first  # SQLite hands out the deleted id again (a PostgreSQL sequence never does)...
    assert run_folder(second, queue.get_run(store, second).folder_token) != folder  # ...never its folder


def test_deleting_files_never_follows_a_symlink_out_of_the_studio_home(store, studio_home, tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "precious.bin").write_text("x")
    rid = submit_run(store, SyntheticConfig(max_steps=1))
    folder = run_folder(rid, queue.get_run(store, rid).folder_token)
    folder.mkdir(parents=True)
    (folder / "linked").symlink_to(outside / "keep", target_is_directory=True)
    export = run_export_cache(rid, queue.get_run(store, rid).folder_token)
    export.parent.mkdir(parents=True, exist_ok=True)
    export.symlink_to(outside, target_is_directory=True)  # the folder itself a link: only the link goes
    assert queue.delete_run(store, rid) == []
    assert not folder.exists() and not export.is_symlink()
    assert (outside / "keep" / "precious.bin").read_text() == "x"


def test_a_runs_folder_that_resolves_outside_the_home_is_left_alone(studio_home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "7-abc").mkdir(parents=True)
    (studio_home / "runs").symlink_to(elsewhere, target_is_directory=True)
    assert remove_run_files(7, "abc") == [run_folder(7, "abc")]
    assert (elsewhere / "7-abc").is_dir()


def test_runs_from_before_folder_tokens_keep_their_folder(db_url, studio_home):
    store = Store(db_url, migrate=False)
    upgrade(store, "0002")
    with store.write() as s:
        s.execute(text("INSERT INTO runs (id, name, algorithm, status, config_json, created_at, queued_at, last_step, "
                       "total_steps, priority, cancel_requested, resume, attempts) VALUES (4, 'old', 'synthetic', "
                       "'completed', '{}', '2026-01-01', '2026-01-01', 0, 1, 0, false, false, 1)"))
    upgrade(store)
    run = queue.get_run(store, 4)
    assert run.folder_token is None and run.lease is None
    assert run_folder(4, run.folder_token) == studio_home / "runs" / "4"
    store.dispose()
