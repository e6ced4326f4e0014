"""A throw-away PostgreSQL cluster for the tests: the server binaries of this machine, a temporary folder, a unix
socket in it and no TCP port, so nothing outside the test session can reach it and no port can collide.

initdb and the server refuse to run as root; as root they run as the ``postgres`` system user (Debian's
postgresql package creates it), which then owns the folder.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

# Set by .ci/run: there a cluster that cannot start is a failure, not a skipped variant.
REQUIRE_ENV = "STUDIO_TEST_POSTGRES"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here, with the reason."""


def server_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    # Debian keeps the binaries off PATH, one folder per major version: take the newest.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if not candidates:
        raise Unavailable("no PostgreSQL server binaries (initdb) on PATH or under /usr/lib/postgresql: "
                          "`make postgres` installs Debian's postgresql package")
    return Path(candidates[-1]).parent


class Cluster:
    def __init__(self) -> None:
        self.bindir = server_bindir()
        self._as: list[str] = []
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root, and initdb refuses root, but there is no 'postgres' system "
                                  "user to run the server as (Debian's postgresql package creates it)") from None
            self._as = ["runuser", "-u", "postgres", "--"]
        # Short and under /tmp: a unix socket's path must fit in about 100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="studio-pg-", dir="/tmp"))
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self._names = itertools.count(1)
        self.started = False
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
            # Durability off: the cluster lives for one test session, and fsyncs would dominate its time.
            opts = (f"-c listen_addresses='' -c unix_socket_directories={self.root} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                      "-o", opts, "start")
            self.started = True
        except Unavailable:
            self.stop()
            raise

    def _run(self, tool: str, *args: str) -> None:
        try:
            subprocess.run([*self._as, str(self.bindir / tool), *args], check=True, capture_output=True, text=True,
                           timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            log = self.root / "server.log"
            if log.exists():
                detail += "\n" + log.read_text(errors="replace")[-2000:]
            raise Unavailable(f"{tool} failed: {detail.strip()}") from e

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.root), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        name = f"studio_test_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: an engine a failed test left behind must not keep the database (and the next test) hostage.
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
