"""The engine worker: a long-running loop that claims queued runs and executes each in its own process.

The worker itself never imports torch. It writes heartbeats (for the run and for itself) while the run
process works, forwards a graceful stop on SIGTERM/SIGINT, and records how the run process ended when it
ended abnormally (killed, out of memory, crashed before it could write its own status).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from db import queue
from db.models import RunStatus
from db.session import Store


@dataclass
class WorkerSettings:
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    # A run whose heartbeat is older than this belongs to an engine that died.
    stale_after_s: float = 60.0
    recover: Literal["requeue", "fail"] = "requeue"
    # After a graceful stop request, how long the run may take to finish its step before it is killed.
    shutdown_grace_s: float = 600.0
    once: bool = False  # exit when the queue is empty (scripts and tests)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class EngineWorker:
    def __init__(self, store: Store, settings: WorkerSettings | None = None, worker_id: str | None = None):
        self.store = store
        self.settings = settings or WorkerSettings()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self._stop_sent_at: float | None = None
        # Set when the engine itself kills the run process, so the event says why instead of guessing OOM.
        self.kill_reason: str | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        """The first signal of any kind (SIGTERM, SIGINT, SIGHUP) means "finish the step, checkpoint, re-queue".

        Only a repeated SIGINT (a person pressing Ctrl-C again) means "now". A repeated SIGTERM or SIGHUP is the
        same request again (a supervisor, a closing terminal, `studio up` forwarding): supervisors escalate with
        SIGKILL themselves, so escalating here would only lose steps that were about to be saved."""
        child_alive = self.child is not None and self.child.poll() is None
        if self.stopping:
            if signum == signal.SIGINT and child_alive:
                self.kill_reason = "stopped by a second interrupt (Ctrl-C) during engine shutdown"
                self.child.kill()
            return
        self.stopping = True
        if child_alive:
            self.child.send_signal(signal.SIGTERM)
            self._stop_sent_at = time.monotonic()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def serve(self) -> None:
        s = self.settings
        queue.register_worker(self.store, self.worker_id, socket.gethostname(), os.getpid())
        try:
            recovered = queue.recover_stale_runs(self.store, s.stale_after_s, requeue=s.recover == "requeue")
            if recovered:
                print(f"recovered stale runs {recovered} ({s.recover})", flush=True)
            last_beat = 0.0
            while not self.stopping:
                run = queue.claim_next_run(self.store, self.worker_id)
                if run is None:
                    if s.once:
                        return
                    if time.monotonic() - last_beat >= s.heartbeat_interval_s:
                        queue.heartbeat(self.store, None, self.worker_id)
                        last_beat = time.monotonic()
                    time.sleep(s.poll_interval_s)
                    continue
                self.execute(run.id)
        finally:
            queue.unregister_worker(self.store, self.worker_id)

    def execute(self, run_id: int) -> None:
        print(f"run {run_id}: started", flush=True)
        # A session of its own: a Ctrl-C in the terminal reaches the worker only, which then stops the run cleanly.
        self.child = subprocess.Popen([sys.executable, "-m", "engine.run_process", str(run_id), self.store.url,
                                       self.worker_id], start_new_session=True)
        if self.stopping:  # a signal arrived while the process was starting
            self.child.send_signal(signal.SIGTERM)
            self._stop_sent_at = time.monotonic()
        with self.store.write() as sess:
            from db.models import Run

            run = sess.get(Run, run_id)
            if run is not None:
                run.pid = self.child.pid
        while True:
            try:
                code = self.child.wait(timeout=self.settings.heartbeat_interval_s)
                break
            except subprocess.TimeoutExpired:
                queue.heartbeat(self.store, run_id, self.worker_id)
                if self._stop_sent_at and time.monotonic() - self._stop_sent_at > self.settings.shutdown_grace_s:
                    self.kill_reason = (f"stopped by the engine: the step did not finish within the "
                                        f"{self.settings.shutdown_grace_s:.0f} s shutdown grace period")
                    self.child.kill()
        self.child = None
        self._stop_sent_at = None
        self._after_exit(run_id, code)

    def _after_exit(self, run_id: int, code: int) -> None:
        run = queue.get_run(self.store, run_id)
        if run.status != RunStatus.running:  # the run process recorded its own outcome
            print(f"run {run_id}: {run.status.value}", flush=True)
            return
        if self.kill_reason and code < 0:
            error, self.kill_reason = self.kill_reason, None
        elif code < 0:
            name = _signal_name(code)
            hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
            error = f"run process was killed by {name}{hint}"
        else:
            error = f"run process exited with code {code} before recording a result"
        if self.stopping and self.settings.recover == "requeue":
            queue.finish_run(self.store, run_id, RunStatus.queued, requeue=True, error=None,
                             message=f"{error} during engine shutdown; re-queued to resume from its last checkpoint")
            print(f"run {run_id}: re-queued ({error}); it resumes from its last checkpoint", flush=True)
        else:
            queue.finish_run(self.store, run_id, RunStatus.failed, error=error)
            print(f"run {run_id}: failed: {error}", flush=True)


def main(url: str | None = None, settings: WorkerSettings | None = None) -> None:
    store = Store(url)
    worker = EngineWorker(store, settings)
    worker.install_signal_handlers()
    print(f"engine worker {worker.worker_id} serving {store.url}", flush=True)
    worker.serve()
    print("engine worker stopped", flush=True)


if __name__ == "__main__":
    main()
