"""The run queue: submit, claim, heartbeat, cancel, resume, clone, delete, recover.

Claiming is a compare-and-set (``UPDATE ... WHERE id = :id AND status = 'queued'``) that works the same on
SQLite and PostgreSQL: of two workers racing for one run exactly one update matches a row.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import (Checkpoint, ComparisonOutput, Evaluation, Event, GroupStat, MetricPoint, Run, RunStatus, Sample,
                       Worker, utcnow)
from db.session import Store


class QueueError(ValueError):
    """A queue action that cannot be done, with the reason a user can act on."""


def add_event(session: Session, run_id: int | None, message: str, level: str = "info") -> None:
    session.add(Event(run_id=run_id, message=message, level=level))


def submit_run(store: Store, config: "BaseRunConfig", *, parent_id: int | None = None,  # noqa: F821
               web: bool = False) -> int:
    """Queue a run after the submit-time checks (engine.submission: absolute paths, STUDIO_DATA_DIRS, run
    references, dataset contents); they raise ConfigError. ``web``: submitted from the web app."""
    from engine.config import ALGORITHM_LABELS, config_to_json
    from engine.submission import check_submission

    config, notes = check_submission(store, config, web=web)
    name = config.name or f"{ALGORITHM_LABELS.get(config.algorithm, config.algorithm)} {utcnow():%Y-%m-%d %H:%M}"
    with store.write() as s:
        top = s.scalar(select(func.max(Run.priority)).where(Run.status == RunStatus.queued)) or 0
        run = Run(name=name, algorithm=config.algorithm, status=RunStatus.queued, config_json=config_to_json(config),
                  total_steps=config.max_steps, parent_id=parent_id, priority=top + 1)
        s.add(run)
        s.flush()
        add_event(s, run.id, f"queued ({config.algorithm}, {config.max_steps} steps)")
        for note in notes:
            add_event(s, run.id, note, level="warning")
        return run.id


def get_run(store: Store, run_id: int) -> Run:
    with store.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        return run


def list_runs(store: Store, status: RunStatus | None = None) -> list[Run]:
    with store.read() as s:
        q = select(Run).order_by(Run.id.desc())
        if status is not None:
            q = q.where(Run.status == status)
        return list(s.scalars(q))


def queue_order(store: Store) -> list[Run]:
    """Queued runs in the order the engine will take them."""
    with store.read() as s:
        return list(s.scalars(select(Run).where(Run.status == RunStatus.queued).order_by(Run.priority, Run.id)))


def claim_next_run(store: Store, worker_id: str, pid: int | None = None) -> Run | None:
    """Atomically take the next queued run for this worker, or None when the queue is empty."""
    while True:
        with store.write() as s:
            run_id = s.scalar(select(Run.id).where(Run.status == RunStatus.queued)
                              .order_by(Run.priority, Run.id).limit(1))
            if run_id is None:
                return None
            now = utcnow()
            res = s.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.queued).values(
                status=RunStatus.running, worker_id=worker_id, pid=pid, started_at=now, heartbeat_at=now,
                finished_at=None, error=None, attempts=Run.attempts + 1))
            if res.rowcount == 1:
                add_event(s, run_id, f"claimed by worker {worker_id}")
                return s.get(Run, run_id)
        # Another worker took it between our select and update: try the next one.


def heartbeat(store: Store, run_id: int | None, worker_id: str) -> None:
    now = utcnow()
    with store.write() as s:
        if run_id is not None:
            s.execute(update(Run).where(Run.id == run_id, Run.worker_id == worker_id,
                                        Run.status == RunStatus.running).values(heartbeat_at=now))
        s.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now, current_run_id=run_id))


def register_worker(store: Store, worker_id: str, hostname: str, pid: int) -> None:
    with store.write() as s:
        s.merge(Worker(id=worker_id, hostname=hostname, pid=pid, started_at=utcnow(), heartbeat_at=utcnow(),
                       stopped_at=None))


def unregister_worker(store: Store, worker_id: str) -> None:
    with store.write() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=utcnow(), current_run_id=None))


def live_workers(store: Store, within_s: float = 30.0) -> list[Worker]:
    since = utcnow() - timedelta(seconds=within_s)
    with store.read() as s:
        return list(s.scalars(select(Worker).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= since)))


def finish_run(store: Store, run_id: int, status: RunStatus, *, error: str | None = None,
               message: str | None = None, requeue: bool = False) -> None:
    """Record how a run ended. ``requeue`` puts it back in the queue to resume from its last checkpoint."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            return
        if requeue:
            run.status, run.resume, run.worker_id, run.pid = RunStatus.queued, True, None, None
            run.queued_at = utcnow()
        else:
            run.status, run.finished_at, run.pid = status, utcnow(), None
        run.error = error
        add_event(s, run_id, message or f"run {status.value}" + (f": {error}" if error else ""),
                  level="error" if status == RunStatus.failed else "info")


def request_cancel(store: Store, run_id: int) -> str:
    """Cancel a queued run now, or ask a running one to stop at its next step boundary."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        if run.status == RunStatus.queued:
            run.status, run.finished_at = RunStatus.cancelled, utcnow()
            add_event(s, run_id, "cancelled while queued")
            return "cancelled"
        if run.status == RunStatus.running:
            run.cancel_requested = True
            add_event(s, run_id, "cancel requested; the run stops after its current step")
            return "cancel requested"
        raise QueueError(f"run {run_id} is already {run.status.value}: only queued or running runs can be cancelled")


def cancel_requested(store: Store, run_id: int) -> bool:
    with store.read() as s:
        return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def resume_run(store: Store, run_id: int) -> None:
    """Put a failed or cancelled run back in the queue; it continues from its last checkpoint."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        if run.status not in (RunStatus.failed, RunStatus.cancelled):
            raise QueueError(f"run {run_id} is {run.status.value}: only failed or cancelled runs can be resumed")
        has_ckpt = s.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == run_id))
        top = s.scalar(select(func.max(Run.priority)).where(Run.status == RunStatus.queued)) or 0
        run.status, run.resume, run.cancel_requested, run.error = RunStatus.queued, True, False, None
        run.finished_at, run.worker_id, run.priority, run.queued_at = None, None, top + 1, utcnow()
        add_event(s, run_id, "resumed: continues from its last checkpoint" if has_ckpt
                  else "resumed: no checkpoint yet, so it restarts from step 0")


def clone_run(store: Store, run_id: int, overrides: dict | None = None) -> int:
    """A new queued run with the same config (plus overrides), remembering where it came from."""
    from engine.config import parse_config

    src = get_run(store, run_id)
    data = json.loads(src.config_json)
    data.update(overrides or {})
    if not overrides or "name" not in overrides:
        data["name"] = f"{src.name} (clone)"
    return submit_run(store, parse_config(data), parent_id=run_id)


def delete_run(store: Store, run_id: int) -> None:
    """Delete a run and everything it wrote. Refused for a running run, whose process still writes."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        if run.status == RunStatus.running:
            raise QueueError(f"run {run_id} is running: cancel it first, then delete it once it has stopped")
        for table in (MetricPoint, GroupStat, Sample, Checkpoint, Evaluation, ComparisonOutput, Event):
            s.execute(delete(table).where(table.run_id == run_id))
        s.execute(update(Run).where(Run.parent_id == run_id).values(parent_id=None))
        s.delete(run)


def move_in_queue(store: Store, run_id: int, delta: int) -> None:
    """Swap a queued run with its neighbour (delta -1: earlier, +1: later)."""
    order = queue_order(store)
    ids = [r.id for r in order]
    if run_id not in ids:
        raise QueueError(f"run {run_id} is not queued")
    i = ids.index(run_id)
    j = max(0, min(len(ids) - 1, i + delta))
    if i == j:
        return
    ids[i], ids[j] = ids[j], ids[i]
    with store.write() as s:
        for prio, rid in enumerate(ids, start=1):
            s.execute(update(Run).where(Run.id == rid, Run.status == RunStatus.queued).values(priority=prio))


def recover_stale_runs(store: Store, stale_after_s: float, requeue: bool) -> list[int]:
    """Runs marked running whose heartbeat stopped: the engine that ran them died. Fail them or re-queue them."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    recovered = []
    with store.write() as s:
        stale = s.scalars(select(Run).where(Run.status == RunStatus.running,
                                            (Run.heartbeat_at < cutoff) | Run.heartbeat_at.is_(None)))
        for run in stale:
            seen = run.heartbeat_at.isoformat(timespec="seconds") if run.heartbeat_at else "never"
            reason = f"engine stopped unexpectedly (worker {run.worker_id}, last heartbeat {seen})"
            if requeue:
                run.status, run.resume, run.worker_id, run.pid, run.queued_at = (RunStatus.queued, True, None, None,
                                                                                 utcnow())
                add_event(s, run.id, f"{reason}; re-queued to resume from its last checkpoint", level="warning")
            else:
                run.status, run.error, run.finished_at, run.pid = RunStatus.failed, reason, utcnow(), None
                add_event(s, run.id, reason, level="error")
            recovered.append(run.id)
    return recovered


def latest_checkpoint(store: Store, run_id: int) -> Checkpoint | None:
    with store.read() as s:
        return s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)
                         .order_by(Checkpoint.step.desc()).limit(1)).first()


def events(store: Store, run_id: int | None = None, limit: int = 200) -> list[Event]:
    with store.read() as s:
        q = select(Event).order_by(Event.id.desc()).limit(limit)
        if run_id is not None:
            q = q.where(Event.run_id == run_id)
        return list(s.scalars(q))


def heartbeat_age(run: Run, now: datetime | None = None) -> float | None:
    if run.heartbeat_at is None:
        return None
    return ((now or utcnow()) - run.heartbeat_at).total_seconds()
