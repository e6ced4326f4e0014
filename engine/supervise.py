"""Child processes of `studio up` / `studio app`: started, relayed, stopped together.

Why each piece:
- Children get their own session, so a terminal's Ctrl-C or hang-up reaches only the supervisor, which then
  sends each child exactly one stop request. Otherwise the engine would see the terminal's SIGINT and then the
  supervisor's SIGTERM, take the second as "stop now" and kill a step that was about to be saved.
- Their output is relayed through pipes, so a closed terminal (SIGHUP) never turns a child's `print` into an
  I/O error mid-run, and a child that fails to start can be quoted in the supervisor's error.
- Any of SIGTERM, SIGINT, SIGHUP means "stop gracefully"; a repeated Ctrl-C is passed on as SIGINT, which the
  engine takes as "now" (the run still resumes from its last checkpoint).
- A child that exits on its own ends the others, and the supervisor exits non-zero with the reason.

Standard library only: `studio app` must not import torch.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Child:
    name: str
    argv: list[str]
    # How long it may take to stop after a stop request before it is killed (the engine finishes a step).
    grace_s: float = 30.0
    proc: subprocess.Popen[bytes] | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    relay: threading.Thread | None = None


def _say(text: str, stream=None) -> None:  # noqa: ANN001 - a text stream
    """Write to the terminal if there still is one: after a hang-up, output has nowhere to go."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


class Supervisor:
    def __init__(self, children: list[Child], *, env: dict[str, str], cwd: str):
        self.children = children
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.cwd = cwd
        self.stop_signal: int | None = None  # the first stop request received
        self._interrupts = 0

    # --- signals --------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            self._send_all(signal.SIGTERM)
            return
        if signum == signal.SIGINT:
            self._interrupts += 1
            self._send_all(signal.SIGINT)

    def _send_all(self, sig: int) -> None:
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                try:
                    c.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def install_signal_handlers(self) -> dict[int, object]:
        """Install the handlers; returns the previous ones, which run() puts back when it is done."""
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    # --- children -------------------------------------------------------------------------------------
    def _relay(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        for raw in iter(child.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            child.tail.append(line)
            _say(f"[{child.name}] {line}")

    def start(self) -> None:
        for c in self.children:
            c.proc = subprocess.Popen(c.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            c.relay = threading.Thread(target=self._relay, args=(c,), daemon=True, name=f"relay-{c.name}")
            c.relay.start()

    def wait(self, poll_s: float = 0.3) -> Child | None:
        """Block until a stop request or until a child exits on its own; stop the rest; return that child."""
        exited: Child | None = None
        while self.stop_signal is None and exited is None:
            exited = next((c for c in self.children if c.proc is not None and c.proc.poll() is not None), None)
            if exited is None:
                time.sleep(poll_s)
        if exited is not None and self.stop_signal is None:
            self._send_all(signal.SIGTERM)
        for c in self.children:
            self._wait_child(c)
        return None if self.stop_signal is not None else exited

    def _wait_child(self, c: Child) -> None:
        if c.proc is None:
            return
        deadline = time.monotonic() + c.grace_s
        while c.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if c.proc.poll() is None:
            _say(f"[{c.name}] did not stop within {c.grace_s:.0f} s: killed", sys.stderr)
            c.proc.kill()
            c.proc.wait()
        if c.relay is not None:
            c.relay.join(timeout=5)

    def run(self) -> int:
        """Start, supervise, stop; 0 after a stop request, 1 when a child ended by itself (reason on stderr)."""
        previous = self.install_signal_handlers()
        try:
            self.start()
            exited = self.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
        if exited is None:
            name = signal.Signals(self.stop_signal).name if self.stop_signal else "stop"
            _say(f"stopped ({name}): " + ", ".join(f"{c.name} exit {c.proc.returncode}" for c in self.children
                                                     if c.proc is not None))
            return 0
        code = exited.proc.returncode if exited.proc is not None else None
        last = next((line for line in reversed(exited.tail) if line.strip()), "")
        _say(f"error: the {exited.name} exited by itself (code {code})" + (f": {last.strip()}" if last else "")
             + (f"; stopped {', '.join(c.name for c in self.children if c is not exited)} too"
                if len(self.children) > 1 else ""), sys.stderr)
        return 1


def port_problem(host: str, port: int) -> str | None:
    """Why the web app could not listen on host:port, or None. Checked before anything starts, so a busy port
    is one clear line instead of an engine started for nothing."""
    import socket

    if not 1 <= port <= 65535:
        return f"port {port} is not a TCP port: use --port with a number from 1 to 65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot serve on --host {host}: {e.strerror}"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            return f"cannot listen on {host}:{port} ({e.strerror}): another program uses it; choose --port"
    return None
