"""The child process that executes one run. A crash, an OOM kill or a GPU fault here never reaches the worker,
and all the memory the run took (GPU memory included) goes back to the system when this process exits.

It owns its run only while its claim's lease holds (db/queue.py): every write checks it, and a watchdog thread
ends the process at once when the lease is gone, so a process stopped (SIGSTOP, a suspended machine) while
another engine took the run over stops as soon as it runs again, without writing. It also dies with its
engine: the kernel sends it SIGTERM when the engine exits (PR_SET_PDEATHSIG), which means "finish the step,
checkpoint, hand the run back", and with the lease check a run already taken over gets nothing from it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import traceback

from db import queue
from db.models import Run, RunStatus
from db.queue import LeaseLost
from db.session import Store

# Exit codes that mean "wrote nothing": the worker records no outcome for them.
EXIT_LEASE_LOST = 3
EXIT_ENGINE_GONE = 4
PR_SET_PDEATHSIG = 1
LEASE_POLL_S = 2.0


class UserError(Exception):
    """A problem the user can fix (bad data, missing file): reported as one line, no traceback."""


def _user_facing(exc: BaseException) -> bool:
    from engine.config import ConfigError

    if isinstance(exc, (UserError, ConfigError, FileNotFoundError)):
        return True
    try:
        from engine.data.types import DataValidationError
    except ImportError:
        return False
    return isinstance(exc, DataValidationError)


def die_with_engine(engine_pid: int | None) -> bool:
    """Have the kernel send SIGTERM when the engine dies (Linux); False if it is already gone, i.e. it died
    before this call and this process was handed to another parent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return engine_pid is None or os.getppid() == engine_pid


class LeaseWatchdog(threading.Thread):
    """Ends the process (os._exit, no cleanup, no write) once its lease is gone, even in the middle of a step:
    the step's own writes would be refused anyway, but a long step would go on using the GPU and the run's
    folder meanwhile."""

    def __init__(self, store: Store, run_id: int, lease: str, interval_s: float = LEASE_POLL_S):
        super().__init__(name="lease-watchdog", daemon=True)
        self.store, self.run_id, self.lease, self.interval_s = store, run_id, lease, interval_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    held = queue.lease_held(self.store, self.run_id, self.lease)
                except Exception:  # noqa: BLE001 - a failed read proves nothing; the next poll decides
                    continue
                if not held:
                    os.write(2, f"run {self.run_id}: this process lost its claim on the run (recovered, re-claimed, "
                                "cancelled or deleted elsewhere); stopping without writing\n".encode())
                    os._exit(EXIT_LEASE_LOST)

    def stop(self) -> None:
        """Before the process records its own outcome, which ends the lease itself."""
        with self._lock:
            self._stopped.set()


def main(run_id: int, db_url: str, worker_id: str, lease: str | None = None, engine_pid: int | None = None) -> int:
    # First, before anything can be written: an engine that died while this process started gets no run.
    if not die_with_engine(engine_pid):
        print(f"run {run_id}: the engine (pid {engine_pid}) exited before the run started; nothing done",
              file=sys.stderr)
        return EXIT_ENGINE_GONE
    store = Store(db_url, migrate=False)
    run = queue.get_run(store, run_id)
    if lease is not None and not queue.lease_held(store, run_id, lease):
        print(f"run {run_id}: its claim ended before the run process started; nothing done", file=sys.stderr)
        return EXIT_LEASE_LOST
    watchdog = LeaseWatchdog(store, run_id, lease) if lease is not None else None
    if watchdog is not None:
        watchdog.start()
    try:
        return _execute(store, run, worker_id, lease, watchdog)
    except LeaseLost as exc:
        print(f"run {run_id}: {exc}; stopping without writing", file=sys.stderr)
        return EXIT_LEASE_LOST


def _execute(store: Store, run: Run, worker_id: str, lease: str | None,
             watchdog: LeaseWatchdog | None) -> int:
    from engine.config import parse_config
    from engine.runs import RUNNERS
    from engine.runs.context import RunContext

    run_id = run.id
    ctx: RunContext | None = None
    try:
        config = parse_config(run.config_json)
        ctx = RunContext(store, run_id, config, resume=run.resume, worker_id=worker_id, lease=lease)
        # Graceful stop: the current step finishes, a checkpoint is written, and the run goes back in the queue.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: ctx.request_shutdown())
        if run.resume:
            ckpt = ctx.resume_checkpoint_path
            ctx.event(f"resuming from checkpoint {ckpt}" if ckpt else "resuming without a checkpoint: from step 0")
        ctx.start_trackers()  # config.trackers: a mirror of the run's steps (engine/runs/trackers.py)
        # Until the runner names its own setup phases (or logs its first step), the run page says this.
        ctx.setup("loading the data, the model and what the run needs before its first step")
        runner = importlib.import_module(RUNNERS[config.algorithm])
        runner.execute(ctx)
        ctx.finish_trackers()
    except LeaseLost:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything ends the run; the worker must hear of it
        if ctx is not None:
            try:
                ctx.finish_trackers()  # flushes what the trackers hold; a tracker's own failure is only an event
            except LeaseLost:
                raise
            except Exception:  # noqa: BLE001 - the run's failure is what gets recorded
                pass
        if watchdog is not None:
            watchdog.stop()
        if _user_facing(exc):
            queue.finish_run(store, run_id, RunStatus.failed, error=str(exc), lease=lease)
        else:
            tb = traceback.format_exc()
            queue.finish_run(store, run_id, RunStatus.failed, error=f"{type(exc).__name__}: {exc}",
                             message=f"run failed:\n{tb}", lease=lease)
        return 1
    if watchdog is not None:
        watchdog.stop()
    if ctx.stop_reason == "cancel":
        queue.finish_run(store, run_id, RunStatus.cancelled, message="cancelled at a step boundary", lease=lease)
    elif ctx.stop_reason == "shutdown":
        queue.finish_run(store, run_id, RunStatus.queued, requeue=True, lease=lease,
                         message="engine shut down: run re-queued; it resumes from its last checkpoint")
    else:
        queue.finish_run(store, run_id, RunStatus.completed, message="completed", lease=lease)
    return 0


if __name__ == "__main__":
    # argv: run id, database URL, worker id, and from engines that hand out leases: the lease, the engine's pid.
    args = sys.argv[1:]
    sys.exit(main(int(args[0]), args[1], args[2], args[3] if len(args) > 3 else None,
                  int(args[4]) if len(args) > 4 else None))
