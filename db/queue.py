"""The run queue: submit, claim, heartbeat, cancel, resume, delete, recover.

Claiming is a compare-and-set (``UPDATE ... WHERE id = :id AND status = 'queued'``): of two workers racing for
one run exactly one update matches a row. On SQLite the write transaction (BEGIN IMMEDIATE) already makes
claims one at a time. On PostgreSQL the candidate is picked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
engines claiming at the same moment take different runs instead of queueing on one row lock.

Each claim hands out a lease (a fresh token in ``runs.lease``). Every write of the process that holds it
starts with ``UPDATE runs ... WHERE id = :id AND lease = :token AND status = 'running'`` in the same
transaction and gives up (``LeaseLost``, everything rolled back) unless that matched the row. Recovery,
orphan cancel/resume/delete and the end of the claim clear the lease, so a process that outlived its claim
(stopped, then continued; left behind by a dead engine) can never write into a run that is no longer its own.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import (Checkpoint, ComparisonOutput, Evaluation, Event, GroupStat, MetricPoint, Run, RunStatus, Sample,
                       Worker, utcnow)
from db.paths import remove_run_files
from db.session import Store


class QueueError(ValueError):
    """A queue action that cannot be done, with the reason a user can act on."""


class LeaseLost(QueueError):
    """This process's claim on the run has ended (recovered, re-claimed, cancelled or deleted elsewhere):
    it must stop without writing anything more."""


# A run whose heartbeat is older than this belongs to an engine that died (the engine's --stale-after default).
STALE_AFTER_S = 60.0


def check_lease(session: Session, run_id: int, lease: str | None, **values: object) -> None:
    """The first statement of a run process's write transaction: its claim must still hold, else LeaseLost
    (and the caller's transaction, so far empty, rolls back). ``values`` are set on the run in the same
    statement. Without a lease (tests, tools, the app) it only sets the values."""
    if lease is None:
        if values:
            session.execute(update(Run).where(Run.id == run_id).values(**values))
        return
    # An UPDATE rather than a SELECT: it locks the row (PostgreSQL) until commit, so recovery or a cancel
    # cannot slip in between this check and the writes that follow it.
    res = session.execute(update(Run).where(Run.id == run_id, Run.lease == lease, Run.status == RunStatus.running)
                          .values(**(values or {"lease": lease})))
    if res.rowcount != 1:
        raise LeaseLost(f"run {run_id} is no longer held by this process (lease {lease[:8]}): it was recovered, "
                        "re-claimed, cancelled or deleted elsewhere")


def lease_held(store: Store, run_id: int, lease: str) -> bool:
    with store.read() as s:
        row = s.execute(select(Run.lease, Run.status).where(Run.id == run_id)).first()
    return row is not None and row.lease == lease and row.status == RunStatus.running


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid runs on this machine; a zombie (exited, not yet reaped) counts as gone."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _worker_gone(worker: Worker, host: str, own_worker_id: str | None = None) -> bool:
    """Provably dead: an engine of this host whose process no longer exists. Another host's engine, or a pid
    that is alive (perhaps reused by something else), proves nothing: only its stale heartbeat will."""
    if worker.hostname != host:
        return False
    if worker.pid == os.getpid() and own_worker_id is not None:
        # An engine asking: the pid is its own, so that other engine is gone (a restarted container's engine
        # often gets its predecessor's pid).
        return worker.id != own_worker_id
    return not pid_alive(worker.pid)


def orphan_reason(s: Session, run: Run, stale_after_s: float = STALE_AFTER_S, *, host: str | None = None,
                  own_worker_id: str | None = None) -> str | None:
    """Why a running run has no live owner, or None while its engine may still be alive.

    Orphaned: no heartbeat within ``stale_after_s``, or the engine that claimed it ran on this host and its
    process is gone and so is the run process (a run process that outlived its engine may still finish its
    step and hand the run back; its heartbeat decides)."""
    if run.status != RunStatus.running:
        return None
    host = host or this_host()
    if run.heartbeat_at is None or run.heartbeat_at < utcnow() - timedelta(seconds=stale_after_s):
        seen = run.heartbeat_at.isoformat(timespec="seconds") if run.heartbeat_at else "never"
        return f"engine stopped unexpectedly (worker {run.worker_id}: no heartbeat since {seen})"
    worker = s.get(Worker, run.worker_id) if run.worker_id else None
    if worker is None or not _worker_gone(worker, host, own_worker_id):
        return None
    if run.pid is not None and pid_alive(run.pid) and not (own_worker_id and run.pid == os.getpid()):
        return None
    return (f"engine stopped unexpectedly (worker {worker.id}, pid {worker.pid} on this host, is gone, and so is "
            "its run process)")


# How the events that start an attempt, and the ones a resume writes (after the attempt ended), begin: the
# run's active time across attempts is read from them (db.reads.runs_overview).
CLAIMED_EVENT = "claimed by worker"
RESUME_EVENTS = ("resumed:", "taken back from its engine")


def add_event(session: Session, run_id: int | None, message: str, level: str = "info") -> None:
    session.add(Event(run_id=run_id, message=message, level=level))


def submit_run(store: Store, *, algorithm: str, name: str, config_json: str, total_steps: int,
               parent_id: int | None = None, notes: tuple[str, ...] | list[str] = ()) -> int:
    """Queue a run from plain values: the config as stored JSON, already checked. ``notes`` become warning
    events of the run. Callers with a config object use engine.submission.submit_run, which runs the
    submit-time checks first and then calls this."""
    with store.write() as s:
        top = s.scalar(select(func.max(Run.priority)).where(Run.status == RunStatus.queued)) or 0
        run = Run(name=name, algorithm=algorithm, status=RunStatus.queued, config_json=config_json,
                  total_steps=total_steps, parent_id=parent_id, priority=top + 1,
                  folder_token=uuid.uuid4().hex[:8])
        s.add(run)
        s.flush()
        add_event(s, run.id, f"queued ({algorithm}, {total_steps} steps)")
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
    """Atomically take the next queued run for this worker, or None when the queue is empty. The returned
    run's ``lease`` is the token its writes must carry."""
    while True:
        with store.write() as s:
            # SKIP LOCKED (PostgreSQL; SQLite renders no locking clause): a run another engine is claiming right
            # now is passed over, not waited for.
            run_id = s.scalar(select(Run.id).where(Run.status == RunStatus.queued)
                              .order_by(Run.priority, Run.id).limit(1).with_for_update(skip_locked=True))
            if run_id is None:
                # Every queued run locked is not an empty queue: those claims (or a reorder) may yet roll back.
                if s.scalar(select(Run.id).where(Run.status == RunStatus.queued).limit(1)) is None:
                    return None
            else:
                now = utcnow()
                res = s.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.queued).values(
                    status=RunStatus.running, worker_id=worker_id, pid=pid, started_at=now, heartbeat_at=now,
                    finished_at=None, error=None, attempts=Run.attempts + 1, lease=uuid.uuid4().hex))
                if res.rowcount == 1:
                    add_event(s, run_id, f"{CLAIMED_EVENT} {worker_id}")
                    return s.get(Run, run_id)
                # Another worker took it between our select and update: try the next one.
                continue
        time.sleep(0.05)  # all locked by other claims: look again once they have committed


def heartbeat(store: Store, run_id: int | None, worker_id: str, lease: str | None = None) -> None:
    """The engine's sign of life, and its run's. With ``lease``, LeaseLost when the run is no longer this
    claim's (nothing is written then)."""
    now = utcnow()
    with store.write() as s:
        if run_id is not None:
            if lease is not None:
                check_lease(s, run_id, lease, heartbeat_at=now)
            else:
                s.execute(update(Run).where(Run.id == run_id, Run.worker_id == worker_id,
                                            Run.status == RunStatus.running).values(heartbeat_at=now))
        # stopped_at cleared: a worker marked dead while it only stalled (suspended, stopped) is alive again.
        s.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now, current_run_id=run_id,
                                                                      stopped_at=None))


def set_run_pid(store: Store, run_id: int, pid: int, lease: str | None = None) -> None:
    with store.write() as s:
        check_lease(s, run_id, lease, pid=pid)


def register_worker(store: Store, worker_id: str, hostname: str, pid: int) -> None:
    with store.write() as s:
        s.merge(Worker(id=worker_id, hostname=hostname, pid=pid, started_at=utcnow(), heartbeat_at=utcnow(),
                       stopped_at=None))


def unregister_worker(store: Store, worker_id: str) -> None:
    with store.write() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=utcnow(), current_run_id=None))


def live_workers(store: Store, within_s: float = 30.0) -> list[Worker]:
    """Engines with a heartbeat younger than ``within_s`` whose process is not provably gone. Workers found
    dead (their pid gone on this host, or silent for longer than the stale window) are marked stopped."""
    now = utcnow()
    since = now - timedelta(seconds=within_s)
    host = this_host()
    with store.read() as s:
        candidates = list(s.scalars(select(Worker).where(Worker.stopped_at.is_(None))))
    alive = [w for w in candidates if w.heartbeat_at >= since and not _worker_gone(w, host)]
    stale_cut = now - timedelta(seconds=max(within_s, STALE_AFTER_S))
    dead = [w for w in candidates if _worker_gone(w, host) or w.heartbeat_at < stale_cut]
    if dead:
        with store.write() as s:
            for w in dead:
                # Only if it has not beaten since we looked: a live worker is never marked stopped.
                s.execute(update(Worker).where(Worker.id == w.id, Worker.heartbeat_at == w.heartbeat_at)
                          .values(stopped_at=now, current_run_id=None))
    return alive


def mark_dead_workers(s: Session, stale_after_s: float, host: str, own_worker_id: str | None = None) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    dead = [w for w in s.scalars(select(Worker).where(Worker.stopped_at.is_(None)))
            if w.id != own_worker_id and (w.heartbeat_at < cutoff or _worker_gone(w, host, own_worker_id))]
    for w in dead:
        w.stopped_at, w.current_run_id = utcnow(), None
    return [w.id for w in dead]


def finish_run(store: Store, run_id: int, status: RunStatus, *, error: str | None = None,
               message: str | None = None, requeue: bool = False, lease: str | None = None) -> None:
    """Record how a run ended and end its claim. ``requeue`` puts it back in the queue to resume from its last
    checkpoint. With ``lease``, only while that claim holds (LeaseLost otherwise, nothing written)."""
    with store.write() as s:
        check_lease(s, run_id, lease)
        run = s.get(Run, run_id)
        if run is None:
            return
        run.lease = None
        if requeue:
            run.status, run.resume, run.worker_id, run.pid = RunStatus.queued, True, None, None
            run.queued_at = utcnow()
        else:
            run.status, run.finished_at, run.pid = status, utcnow(), None
        run.error = error
        add_event(s, run_id, message or f"run {status.value}" + (f": {error}" if error else ""),
                  level="error" if status == RunStatus.failed else "info")


def _end_orphan_claim(run: Run) -> None:
    # Clearing the lease is what fences the orphan's process, should it still exist somewhere.
    run.lease, run.pid, run.worker_id = None, None, None


def request_cancel(store: Store, run_id: int, stale_after_s: float = STALE_AFTER_S) -> str:
    """Cancel a queued run now, or ask a running one to stop at its next step boundary. A running run whose
    engine is gone (see ``orphan_reason``) has nobody to ask: it is cancelled at once."""
    with store.write() as s:
        run = s.get(Run, run_id, with_for_update=True)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        if run.status == RunStatus.queued:
            run.status, run.finished_at = RunStatus.cancelled, utcnow()
            add_event(s, run_id, "cancelled while queued")
            return "cancelled"
        orphaned = orphan_reason(s, run, stale_after_s)
        if orphaned:
            _end_orphan_claim(run)
            run.status, run.finished_at, run.cancel_requested = RunStatus.cancelled, utcnow(), True
            add_event(s, run_id, f"cancelled at once: {orphaned}; it keeps its checkpoints", level="warning")
            return "cancelled (its engine is gone)"
        if run.status == RunStatus.running:
            run.cancel_requested = True
            add_event(s, run_id, "cancel requested; the run stops after its current step")
            return "cancel requested"
        raise QueueError(f"run {run_id} is already {run.status.value}: only queued or running runs can be cancelled")


def cancel_requested(store: Store, run_id: int) -> bool:
    with store.read() as s:
        return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def resume_run(store: Store, run_id: int, stale_after_s: float = STALE_AFTER_S) -> None:
    """Put a failed or cancelled run, or a running one whose engine is gone, back in the queue; it continues
    from its last checkpoint."""
    with store.write() as s:
        run = s.get(Run, run_id, with_for_update=True)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        orphaned = orphan_reason(s, run, stale_after_s)
        if orphaned:
            _end_orphan_claim(run)
            add_event(s, run_id, f"{RESUME_EVENTS[1]}: {orphaned}", level="warning")
        elif run.status not in (RunStatus.failed, RunStatus.cancelled):
            raise QueueError(f"run {run_id} is {run.status.value}: only failed or cancelled runs (or running ones "
                             "whose engine is gone) can be resumed")
        has_ckpt = s.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == run_id))
        top = s.scalar(select(func.max(Run.priority)).where(Run.status == RunStatus.queued)) or 0
        run.status, run.resume, run.cancel_requested, run.error = RunStatus.queued, True, False, None
        run.finished_at, run.worker_id, run.priority, run.queued_at = None, None, top + 1, utcnow()
        run.lease, run.pid = None, None
        add_event(s, run_id, f"{RESUME_EVENTS[0]} continues from its last checkpoint" if has_ckpt
                  else f"{RESUME_EVENTS[0]} no checkpoint yet, so it restarts from step 0")


MAX_TAGS, MAX_TAG_CHARS, MAX_NOTES_CHARS = 12, 32, 4000


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags as stored: stripped, without empties or repeats (first spelling kept), in the order given; a tag too
    long, or too many of them, is refused with what to change."""
    out: list[str] = []
    for t in tags:
        t = " ".join(str(t).split())
        if not t or t.lower() in (x.lower() for x in out):
            continue
        if len(t) > MAX_TAG_CHARS:
            raise QueueError(f"tag {t[:40]!r} is {len(t)} characters long: keep each tag to {MAX_TAG_CHARS}")
        out.append(t)
    if len(out) > MAX_TAGS:
        raise QueueError(f"{len(out)} tags: a run takes at most {MAX_TAGS}")
    return out


def set_run_notes(store: Store, run_id: int, *, tags: Iterable[str], notes: str) -> None:
    """A run's tags and notes (any status: they describe the run, they do not change it)."""
    cleaned = clean_tags(tags)
    text = str(notes).strip()
    if len(text) > MAX_NOTES_CHARS:
        raise QueueError(f"the notes are {len(text)} characters long: keep them to {MAX_NOTES_CHARS}")
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        run.tags, run.notes = cleaned or None, text or None


def delete_run(store: Store, run_id: int, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete a run, everything it wrote and its folders (checkpoints, caches, exports). Refused for a running
    run whose engine is alive, as its process still writes; allowed once that engine is gone. Returns the
    folders left in place (outside the studio home, see ``remove_run_files``)."""
    with store.write() as s:
        run = s.get(Run, run_id, with_for_update=True)
        if run is None:
            raise QueueError(f"run {run_id} does not exist: `studio runs` lists the runs")
        if run.status == RunStatus.running and not orphan_reason(s, run, stale_after_s):
            raise QueueError(f"run {run_id} is running: cancel it first, then delete it once it has stopped")
        token = run.folder_token
        for table in (MetricPoint, GroupStat, Sample, Checkpoint, Evaluation, ComparisonOutput, Event):
            s.execute(delete(table).where(table.run_id == run_id))
        s.execute(update(Run).where(Run.parent_id == run_id).values(parent_id=None))
        s.execute(update(Worker).where(Worker.current_run_id == run_id).values(current_run_id=None))
        s.delete(run)  # the row, and with it the lease an orphan's process would need to write
    # Files after the commit: a delete that fails in the store leaves the run whole, files included.
    return remove_run_files(run_id, token)


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


def recover_stale_runs(store: Store, stale_after_s: float, requeue: bool, *,
                       own_worker_id: str | None = None) -> list[int]:
    """Runs whose engine died (``orphan_reason``): re-queue them to resume, or fail them. One asked to cancel
    is cancelled. Workers found dead are marked stopped. Every engine calls this periodically, so an orphan
    waits at most the stale window, and no time at all when its engine is provably gone from this host."""
    host = this_host()
    recovered = []
    with store.write() as s:
        # Run rows locked first, in id order, then workers: the order a heartbeat takes them in, so two engines
        # recovering at once, or one recovering while another beats, cannot deadlock on PostgreSQL.
        running = s.scalars(select(Run).where(Run.status == RunStatus.running).order_by(Run.id)
                            .with_for_update()).all()
        mark_dead_workers(s, stale_after_s, host, own_worker_id)
        for run in running:
            reason = orphan_reason(s, run, stale_after_s, host=host, own_worker_id=own_worker_id)
            if reason is None:
                continue
            _end_orphan_claim(run)
            if run.cancel_requested:
                run.status, run.finished_at = RunStatus.cancelled, utcnow()
                add_event(s, run.id, f"{reason}; it had been asked to cancel: cancelled", level="warning")
            elif requeue:
                run.status, run.resume, run.queued_at = RunStatus.queued, True, utcnow()
                add_event(s, run.id, f"{reason}; re-queued to resume from its last checkpoint", level="warning")
            else:
                run.status, run.error, run.finished_at = RunStatus.failed, reason, utcnow()
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
