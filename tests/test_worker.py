"""The engine worker through real processes: claims, cancel, SIGTERM, SIGKILL, stale recovery, readers vs writer.

Runs use the synthetic experiment: real training, no model, a fraction of a second per step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, update

from db import queue
from db.models import Checkpoint, Event, GroupStat, MetricPoint, Run, RunStatus, utcnow
from db.session import Store
from engine.config import SyntheticConfig
from tests.helpers import ROOT, run_cli, start_engine, studio_cmd, wait_for
from engine.submission import submit_run

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def synthetic(steps: int, **kw) -> SyntheticConfig:
    kw.setdefault("n_val", 200)
    kw.setdefault("n_test_states", 200)
    return SyntheticConfig(max_steps=steps, **kw)


def status(store: Store, run_id: int) -> RunStatus:
    return queue.get_run(store, run_id).status


def series(store: Store, run_id: int, key: str) -> list[tuple[int, float]]:
    with store.read() as s:
        return list(s.execute(select(MetricPoint.step, MetricPoint.value)
                              .where(MetricPoint.run_id == run_id, MetricPoint.key == key).order_by(MetricPoint.step)))


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return out


def test_two_workers_racing_claim_each_run_once(store, db_url, tmp_path):
    ids = [submit_run(store, synthetic(1)) for _ in range(100)]
    # Both processes start claiming only once both are ready (imports done, store open and connected: the first
    # PostgreSQL connection takes long enough for the other worker to claim everything meanwhile), so they really
    # race for the same rows even when a busy machine starts one of them seconds after the other.
    script = ("import sys, time, pathlib\nfrom db.session import Store\nfrom db import queue\n"
              "store = Store(sys.argv[1], migrate=False)\nstore.write_engine.connect().close()\n"
              "ready = pathlib.Path(sys.argv[3])\n(ready / sys.argv[2]).touch()\n"
              "while len(list(ready.iterdir())) < 2: time.sleep(0.01)\n"
              "while (run := queue.claim_next_run(store, sys.argv[2])) is not None:\n"
              "    print(run.id, flush=True)\n"
              "    time.sleep(0.005)\n")  # a worker works between claims; without it a fast machine lets one take all
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url, f"w{i}", str(ready)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    claimed = [int(x) for out, _ in outs for x in out.split()]
    assert sorted(claimed) == ids  # every run claimed, none twice
    with store.read() as s:
        workers = dict(s.execute(select(Run.id, Run.worker_id)).all())
    assert {workers[i] for i in ids} == {"w0", "w1"}  # both took part in the race


@pytest.mark.backends("postgresql")
def test_two_engines_racing_over_20_queued_runs_run_each_exactly_once(store, db_url):
    ids = [submit_run(store, synthetic(1)) for _ in range(20)]
    engines = [subprocess.Popen(studio_cmd("engine", "--once", "--poll", "0.2", "--db", db_url), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [e.communicate(timeout=900)[0] for e in engines]
    assert all(e.returncode == 0 for e in engines), outs
    started = sorted(int(line.split()[1].rstrip(":")) for out in outs for line in out.splitlines()
                     if line.startswith("run ") and line.endswith(": started"))
    assert started == ids, outs  # each run started by one engine, once
    with store.read() as s:
        claims = dict(s.execute(select(Event.run_id, func.count()).where(Event.message.startswith(queue.CLAIMED_EVENT))
                                .group_by(Event.run_id)).all())
        runs = {r.id: r for r in s.scalars(select(Run))}
    assert claims == {i: 1 for i in ids}
    assert all(runs[i].status == RunStatus.completed and runs[i].attempts == 1 for i in ids)
    assert len({runs[i].worker_id for i in ids}) == 2  # both engines took part


@pytest.mark.backends("postgresql")
def test_a_claim_passes_over_a_run_being_claimed_and_waits_when_all_are(store, db_url):
    first, second = (submit_run(store, synthetic(1)) for _ in range(2))
    other = create_engine(db_url)
    got: list = []

    def claim() -> None:
        got.append(queue.claim_next_run(store, "w-late"))

    try:
        with other.connect() as conn:
            # Another engine's claim of the first run, still open: its row is locked until that commits.
            conn.execute(select(Run.id).where(Run.id == first).with_for_update())
            t = threading.Thread(target=claim)
            t.start()
            t.join(timeout=10)
            assert not t.is_alive(), "the claim waited on a locked run instead of passing over it"
            assert got[0].id == second
            # Now the only queued run is locked: not an empty queue, so the claim waits, then takes it when the
            # other claim rolls back.
            t = threading.Thread(target=claim)
            t.start()
            t.join(timeout=1.0)
            assert t.is_alive() and len(got) == 1, got
            conn.rollback()
        t.join(timeout=10)
        assert not t.is_alive() and got[1] is not None and got[1].id == first
    finally:
        other.dispose()


def test_queued_run_completes_with_metrics_every_step(store, db_url):
    run_id = submit_run(store, synthetic(12, checkpoint_every=5))
    out = run_cli("engine", "--once", "--db", db_url)
    assert out.returncode == 0, out.stderr
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.completed and run.last_step == 12
    assert [s for s, _ in series(store, run_id, "val/worst_group_loss")] == list(range(1, 13))
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(GroupStat).where(GroupStat.run_id == run_id)) == 24
        assert s.scalars(select(Checkpoint.step).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)).all() \
            == [5, 10, 12]


def test_cancel_stops_a_running_run_at_a_step_boundary(store, db_url):
    run_id = submit_run(store, synthetic(100_000))
    engine = start_engine(db_url)
    try:
        wait_for(lambda: queue.get_run(store, run_id).last_step >= 3, what="run to make progress")
        assert queue.request_cancel(store, run_id) == "cancel requested"
        wait_for(lambda: status(store, run_id) == RunStatus.cancelled, what="run to be cancelled")
        run = queue.get_run(store, run_id)
        steps = [s for s, _ in series(store, run_id, "train/loss")]
        assert steps == list(range(1, run.last_step + 1))  # no half-written step
        assert queue.latest_checkpoint(store, run_id).step == run.last_step
        assert engine.poll() is None  # the worker goes on serving
    finally:
        stop(engine)


def test_sigterm_finishes_the_step_requeues_and_resume_equals_uninterrupted(store, db_url):
    cfg = synthetic(300, checkpoint_every=1000, seed=3)
    reference = submit_run(store, cfg)
    assert run_cli("engine", "--once", "--db", db_url).returncode == 0

    run_id = submit_run(store, cfg)
    engine = start_engine(db_url)
    wait_for(lambda: queue.get_run(store, run_id).last_step >= 5, what="run to make progress")
    engine.send_signal(signal.SIGTERM)  # once: a second signal means "stop now" and kills the step
    out, _ = engine.communicate(timeout=120)
    assert engine.returncode == 0, out
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.queued and run.resume, (run.status, out)
    stopped_at = run.last_step
    assert 5 <= stopped_at < 300
    ckpt = queue.latest_checkpoint(store, run_id)
    assert ckpt is not None and ckpt.step == stopped_at, [e.message for e in queue.events(store, run_id)]

    assert run_cli("engine", "--once", "--db", db_url).returncode == 0
    assert status(store, run_id) == RunStatus.completed
    for key in ("train/loss", "val/worst_group_loss", "reward_error/worst"):
        resumed, uninterrupted = series(store, run_id, key), series(store, reference, key)
        assert [s for s, _ in resumed] == list(range(1, 301))
        assert resumed == uninterrupted, key  # resume equals uninterrupted, step for step


def test_sigkill_of_the_run_process_is_recorded_and_the_worker_survives(store, db_url):
    victim = submit_run(store, synthetic(100_000))
    engine = start_engine(db_url)
    try:
        wait_for(lambda: queue.get_run(store, victim).last_step >= 2, what="run to start")
        pid = wait_for(lambda: queue.get_run(store, victim).pid, what="run pid")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: status(store, victim) == RunStatus.failed, what="failure to be recorded")
        assert "SIGKILL" in queue.get_run(store, victim).error
        assert engine.poll() is None
        after = submit_run(store, synthetic(3))
        wait_for(lambda: status(store, after) == RunStatus.completed, what="next run to complete")
    finally:
        stop(engine)


def _make_stale(store: Store, run_id: int) -> None:
    with store.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=RunStatus.running, worker_id="dead-host:1:abc",
                                                             heartbeat_at=utcnow() - timedelta(minutes=10)))


def test_stale_run_is_marked_failed_with_the_reason(store, db_url):
    run_id = submit_run(store, synthetic(3))
    _make_stale(store, run_id)
    assert run_cli("engine", "--once", "--recover", "fail", "--db", db_url).returncode == 0
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.failed and "engine stopped unexpectedly" in run.error


def test_stale_run_is_requeued_and_resumes_from_its_checkpoint(store, db_url):
    # Long enough that a fast machine cannot finish it between the first checkpoint and the kills below.
    steps = 400
    run_id = submit_run(store, synthetic(steps, checkpoint_every=5))
    engine = start_engine(db_url)
    wait_for(lambda: queue.latest_checkpoint(store, run_id) is not None, interval=0.02, what="a checkpoint")
    pid = queue.get_run(store, run_id).pid
    engine.kill()  # the whole engine dies without a word: its child keeps going until we kill it too
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    engine.wait()
    assert status(store, run_id) == RunStatus.running  # left behind by the dead engine
    _make_stale(store, run_id)
    assert run_cli("engine", "--once", "--db", db_url).returncode == 0
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.completed and run.attempts == 2
    assert [s for s, _ in series(store, run_id, "train/loss")] == list(range(1, steps + 1))


def test_readers_never_see_database_is_locked_while_the_worker_writes(store, db_url):
    run_id = submit_run(store, synthetic(100_000))
    engine = start_engine(db_url)
    errors: list[BaseException] = []
    reads = 0
    stop_reading = threading.Event()

    def reader() -> None:
        nonlocal reads
        mine = Store(db_url, migrate=False)
        while not stop_reading.is_set():
            try:
                series(mine, run_id, "train/loss")
                queue.list_runs(mine)
                reads += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    try:
        wait_for(lambda: queue.get_run(store, run_id).last_step >= 2, what="writes to begin")
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(20):  # a second writer (the app submitting runs) at the same time
            submit_run(store, synthetic(1))
            time.sleep(0.1)
        time.sleep(2)
        stop_reading.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert reads > 10
    finally:
        queue.request_cancel(store, run_id)
        stop(engine)
