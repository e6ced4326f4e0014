"""The engine worker: a long-running loop that claims queued runs and executes each in its own process.

The worker itself never imports torch. It writes heartbeats (for the run and for itself) while the run
process works, forwards a graceful stop on SIGTERM/SIGINT, and records how the run process ended when it
ended abnormally (killed, out of memory, crashed before it could write its own status).

Its writes about a run carry the run's lease, like the run process's: an engine that stalled while another
took its run over stops that run's process and records nothing. Every few heartbeats, idle or busy, it also
recovers the runs of dead engines (db.queue.recover_stale_runs), so no run waits for an engine restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from db import queue
from db.models import RunStatus
from db.queue import LeaseLost
from db.session import Store
from engine.run_process import EXIT_ENGINE_GONE, EXIT_LEASE_LOST


@dataclass
class WorkerSettings:
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    # A run whose heartbeat is older than this belongs to an engine that died.
    stale_after_s: float = queue.STALE_AFTER_S
    recover: Literal["requeue", "fail"] = "requeue"
    # After a graceful stop request, how long the run may take to finish its step before it is killed.
    shutdown_grace_s: float = 600.0
    once: bool = False  # exit when the queue is empty (scripts and tests)
    # How often to look for runs of dead engines (None: every few heartbeats, and at least twice per stale window).
    recover_every_s: float | None = None

    @property
    def recover_interval_s(self) -> float:
        if self.recover_every_s is not None:
            return self.recover_every_s
        return max(self.heartbeat_interval_s, min(5 * self.heartbeat_interval_s, self.stale_after_s / 2))


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _echo_file(path, start: int, done: threading.Event, interval_s: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    """Copy what is appended to `path` after byte `start` to this process's stdout until `done` is set and the
    file has nothing more (the run's output in the engine's terminal, as before it went to a file)."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            finished = done.is_set()
            chunk = f.read(1 << 16)
            if chunk:
                try:
                    if out is not None:
                        out.write(chunk)
                        out.flush()
                    else:
                        sys.stdout.write(chunk.decode("utf-8", "replace"))
                        sys.stdout.flush()
                except (OSError, ValueError):  # the terminal is gone: the file still has everything
                    return
                continue
            if finished:
                return
            time.sleep(interval_s)


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
        self._lease_lost = False
        self._last_recover = 0.0

    def _on_signal(self, signum: int, _frame: object) -> None:
        """The first signal of any kind (SIGTERM, SIGINT, SIGHUP) means "finish the step, checkpoint, re-queue".

        Only a repeated SIGINT (a person pressing Ctrl-C again) means "now". A repeated SIGTERM or SIGHUP is the
        same request again (a supervisor, a closing terminal, `studio up` forwarding): supervisors escalate with
        SIGKILL themselves, so escalating here would only lose steps that were about to be saved."""
        child_alive = self.child is not None and self.child.poll() is None
        if self.stopping:
            if signum == signal.SIGINT and child_alive:
                self._kill_child("stopped by a second interrupt (Ctrl-C) during engine shutdown")
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
            self.recover()
            last_beat = 0.0
            while not self.stopping:
                run = queue.claim_next_run(self.store, self.worker_id)
                if run is None:
                    if s.once:
                        return
                    if time.monotonic() - last_beat >= s.heartbeat_interval_s:
                        queue.heartbeat(self.store, None, self.worker_id)
                        last_beat = time.monotonic()
                    self.maybe_recover()
                    time.sleep(s.poll_interval_s)
                    continue
                self.execute(run.id, run.lease)
        finally:
            queue.unregister_worker(self.store, self.worker_id)

    def recover(self) -> list[int]:
        """Re-queue (or fail) the runs of dead engines; this engine's own run is never one of them."""
        s = self.settings
        self._last_recover = time.monotonic()
        recovered = queue.recover_stale_runs(self.store, s.stale_after_s, requeue=s.recover == "requeue",
                                             own_worker_id=self.worker_id)
        if recovered:
            print(f"recovered runs of dead engines {recovered} ({s.recover})", flush=True)
        return recovered

    def maybe_recover(self) -> None:
        if time.monotonic() - self._last_recover >= self.settings.recover_interval_s:
            self.recover()

    def execute(self, run_id: int, lease: str | None = None) -> None:
        print(f"run {run_id}: started", flush=True)
        self.kill_reason, self._lease_lost = None, False
        # A session of its own: a Ctrl-C in the terminal reaches the worker only, which then stops the run cleanly.
        # The engine's pid lets the child tell whether its engine died before the child asked to die with it.
        args = [sys.executable, "-m", "engine.run_process", str(run_id), self.store.url, self.worker_id]
        if lease is not None:
            args += [lease, str(os.getpid())]
        log_path = self._output_log(run_id)
        log = log_path.open("ab")
        log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} run {run_id} started by {self.worker_id}\n".encode())
        log.flush()
        start = log.tell()  # before the child starts: whatever it prints from its first line on is echoed
        # The child writes to a file, not a pipe: it keeps a place to write if this engine dies (a pipe would
        # break under it), and the app's Logs view reads the same file. The engine's terminal gets a copy.
        self.child = subprocess.Popen(args, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        done = threading.Event()
        echo = threading.Thread(target=_echo_file, args=(log_path, start, done), daemon=True)
        echo.start()
        if self.stopping:  # a signal arrived while the process was starting
            self.child.send_signal(signal.SIGTERM)
            self._stop_sent_at = time.monotonic()
        try:
            queue.set_run_pid(self.store, run_id, self.child.pid, lease)
        except LeaseLost:
            self._on_lease_lost()
        while True:
            try:
                code = self.child.wait(timeout=self.settings.heartbeat_interval_s)
                break
            except subprocess.TimeoutExpired:
                try:
                    queue.heartbeat(self.store, run_id, self.worker_id, lease)
                except LeaseLost:
                    self._on_lease_lost()
                    queue.heartbeat(self.store, None, self.worker_id)
                if self._stop_sent_at and time.monotonic() - self._stop_sent_at > self.settings.shutdown_grace_s:
                    self._kill_child(f"stopped by the engine: the step did not finish within the "
                                     f"{self.settings.shutdown_grace_s:.0f} s shutdown grace period")
                self.maybe_recover()
        done.set()
        echo.join(timeout=10)
        self.child = None
        self._stop_sent_at = None
        self._after_exit(run_id, code, lease)

    def _output_log(self, run_id: int):  # type: ignore[no-untyped-def]
        from db.paths import run_output_log

        path = run_output_log(run_id, queue.get_run(self.store, run_id).folder_token)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _kill_child(self, reason: str) -> None:
        if self.child is not None and self.child.poll() is None:
            self.kill_reason = self.kill_reason or reason
            self.child.kill()

    def _on_lease_lost(self) -> None:
        # Recovered by another engine while this one stalled (suspended, stopped): the run is no longer ours,
        # and its process here must not train on beside the new owner's.
        self._lease_lost = True
        self._kill_child("stopped by the engine: the run was taken over by another engine")

    def _after_exit(self, run_id: int, code: int, lease: str | None = None) -> None:
        try:
            run = queue.get_run(self.store, run_id)
        except queue.QueueError:  # deleted while its engine was gone
            print(f"run {run_id}: deleted meanwhile; nothing recorded", flush=True)
            return
        if run.status != RunStatus.running:  # the run process recorded its own outcome (or another engine did)
            print(f"run {run_id}: {run.status.value}", flush=True)
            self.kill_reason = None
            return
        if self._lease_lost or (lease is not None and run.lease != lease):
            print(f"run {run_id}: now run by another engine; nothing recorded", flush=True)
            self.kill_reason = None
            return
        by_engine = bool(self.kill_reason and code < 0)
        if by_engine:
            error, self.kill_reason = self.kill_reason, None
        elif code in (EXIT_LEASE_LOST, EXIT_ENGINE_GONE):
            # The child saw its claim (or its engine) gone, yet the claim holds: record it rather than leave
            # the run running with nobody on it.
            error = f"run process stopped (exit code {code}): it found its claim on the run gone"
        elif code < 0:
            name = _signal_name(code)
            hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
            error = f"run process was killed by {name}{hint}"
        else:
            error = f"run process exited with code {code} before recording a result"
        try:
            if self.stopping and self.settings.recover == "requeue":
                queue.finish_run(self.store, run_id, RunStatus.queued, requeue=True, error=None, lease=lease,
                                 message=f"{error}{'' if by_engine else ' during engine shutdown'}; re-queued "
                                         "to resume from its last checkpoint")
                print(f"run {run_id}: re-queued ({error}); it resumes from its last checkpoint", flush=True)
            else:
                queue.finish_run(self.store, run_id, RunStatus.failed, error=error, lease=lease)
                print(f"run {run_id}: failed: {error}", flush=True)
        except LeaseLost:
            print(f"run {run_id}: taken over by another engine meanwhile; nothing recorded", flush=True)


def main(url: str | None = None, settings: WorkerSettings | None = None) -> None:
    store = Store(url)
    worker = EngineWorker(store, settings)
    worker.install_signal_handlers()
    print(f"engine worker {worker.worker_id} serving {store.url}", flush=True)
    worker.serve()
    print("engine worker stopped", flush=True)


if __name__ == "__main__":
    main()
