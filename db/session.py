"""Connections to the store.

SQLite is the default (one file, WAL): readers never block the writer and the writer never blocks
readers. Two engines share the file: reads begin a deferred transaction, writes begin IMMEDIATE, so a
writer takes the write lock up front and waits on busy_timeout instead of failing later with "database
is locked" when it upgrades a read lock. PostgreSQL needs none of this: both handles are one engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from db.paths import studio_home

BUSY_TIMEOUT_MS = 30_000


def default_url() -> str:
    return os.environ.get("STUDIO_DB_URL") or f"sqlite:///{studio_home() / 'studio.db'}"


def _with_driver(url: str) -> str:
    # A bare postgresql:// (what servers and hosting panels print) would make SQLAlchemy load psycopg2, which
    # the studio does not install; the postgres extra brings psycopg 3.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare):]
    return url


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # The driver's own transaction handling is turned off so that BEGIN is ours to emit (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint of the WAL; safe with WAL
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql(begin)

    return engine


class Store:
    """Session factories for one database: ``read()`` for queries, ``write()`` for short write transactions."""

    def __init__(self, url: str | None = None, *, migrate: bool = True):
        self.url = _with_driver(url or default_url())
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.read_engine = _sqlite_engine(self.url, "BEGIN")
            self.write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
        else:
            self.read_engine = self.write_engine = create_engine(self.url, pool_pre_ping=True)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        if migrate:
            from db.migrate import upgrade

            upgrade(self)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
