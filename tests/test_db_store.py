"""The store: pragmas, migrations on empty and existing databases, schema = models, batched step writes; on SQLite
and on PostgreSQL (a throw-away server, see tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text

from db.migrate import current_revision
from db.models import Base, GroupStat, MetricPoint, Run, RunStatus, Sample
from db.session import Store
from db.writes import truncate_after, write_step
from engine.config import SyntheticConfig
from engine.submission import submit_run
from tests.helpers import ROOT

pytestmark = pytest.mark.backends("sqlite", "postgresql")


@pytest.mark.backends("sqlite")
def test_sqlite_pragmas_on_every_connection(store):
    for engine in (store.read_engine, store.write_engine):
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_migrations_create_the_schema_of_the_models(store):
    assert current_revision(store) is not None
    with store.read_engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_upgrade_on_an_existing_database_keeps_its_data(db_url, store):
    run_id = submit_run(store, SyntheticConfig(max_steps=3))
    write_step(store, run_id, 1, {"loss": 0.5})
    store.dispose()
    again = Store(db_url)  # second start: migrations run again on a populated file
    with again.read() as s:
        assert s.get(Run, run_id).status == RunStatus.queued
        assert s.scalar(select(func.count()).select_from(MetricPoint)) == 1
    assert current_revision(again) == current_revision(store)


def test_processes_opening_an_empty_database_at_once_migrate_it_once(db_url, tmp_path):
    # As `docker compose up --scale engine=3` does: each process migrates on start, all at the same moment.
    script = ("import sys, time, pathlib\nready = pathlib.Path(sys.argv[2])\n(ready / sys.argv[3]).touch()\n"
              "while len(list(ready.iterdir())) < 3: time.sleep(0.01)\n"
              "from db.session import Store\nStore(sys.argv[1]).dispose()\n")
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url, str(ready), str(i)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    store = Store(db_url, migrate=False)
    with store.read() as s:
        assert s.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert current_revision(store) is not None
    store.dispose()


def test_migration_from_a_bare_pre_alembic_database_fails_loudly(db_url):
    foreign = create_engine(db_url)
    with foreign.begin() as c:
        c.execute(text("CREATE TABLE runs (id INTEGER PRIMARY KEY)"))
    foreign.dispose()
    with pytest.raises(Exception):
        Store(db_url)  # a foreign 'runs' table is never silently adopted


def test_foreign_keys_are_enforced(store):
    with pytest.raises(Exception):
        with store.write() as s:
            s.add(MetricPoint(run_id=999, step=1, key="x", value=1.0))


def test_step_write_is_one_transaction(store):
    run_id = submit_run(store, SyntheticConfig(max_steps=3))
    write_step(store, run_id, 1, {"a": 1.0, "b": float("nan")}, [{"group": "g0", "weight": 0.5, "loss": 1.0}],
               [{"group": "g0", "prompt": "p", "completion": "c", "reward": 0.2, "advantage": 0.1}])
    # A duplicate (run, key, step) violates the unique index: the whole step must be rolled back.
    with pytest.raises(Exception):
        write_step(store, run_id, 2, {"a": 2.0}, [{"group": "g0"}, {"group": "g0"}])
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(MetricPoint).where(MetricPoint.step == 2)) == 0
        assert s.scalar(select(MetricPoint.value).where(MetricPoint.key == "b")) is None  # NaN stored as NULL
        assert s.get(Run, run_id).last_step == 1
        assert s.scalar(select(func.count()).select_from(Sample)) == 1


def test_truncate_after_drops_only_later_steps(store):
    run_id = submit_run(store, SyntheticConfig(max_steps=5))
    for step in range(1, 6):
        write_step(store, run_id, step, {"loss": float(step)}, [{"group": "g", "weight": 1.0}])
    truncate_after(store, run_id, 3)
    with store.read() as s:
        assert s.scalars(select(MetricPoint.step).order_by(MetricPoint.step)).all() == [1, 2, 3]
        assert s.scalar(select(func.count()).select_from(GroupStat)) == 3
        assert s.get(Run, run_id).last_step == 3


@pytest.mark.backends("sqlite")
def test_series_since_step_is_served_by_the_covering_index(store):
    with store.read_engine.connect() as c:
        plan = c.exec_driver_sql("EXPLAIN QUERY PLAN SELECT step, value FROM metric_points "
                                 "WHERE run_id = 1 AND key = 'loss' AND step > 10 ORDER BY step").fetchall()
    detail = " ".join(str(r[-1]) for r in plan)
    # A range seek on the covering index: the table itself is never read, let alone scanned.
    assert "USING COVERING INDEX ix_metric_points_series" in detail, detail
    assert "run_id=? AND key=? AND step>?" in detail, detail
    assert "SCAN metric_points" not in detail and "TEMP B-TREE" not in detail, detail


@pytest.mark.backends("postgresql")
def test_chart_reads_are_index_only_scans_of_the_covering_indexes_on_postgresql(store):
    run_id = submit_run(store, SyntheticConfig(max_steps=3))
    for step in range(1, 401):
        write_step(store, run_id, step, {"loss": 1.0 / step, "kl": 0.1},
                   [{"group": "g0", "weight": 0.5}, {"group": "g1", "weight": 0.5}])
    with store.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        # The visibility map an index-only scan relies on; autovacuum keeps it current on a live store.
        c.exec_driver_sql("VACUUM ANALYZE metric_points, group_stats")
    with store.read_engine.connect() as c:
        # A 400-step table is small enough that the planner might scan it whole; on a real run it would not.
        c.exec_driver_sql("SET enable_seqscan = off")
        plans = {index: "\n".join(r[0] for r in c.exec_driver_sql(f"EXPLAIN {sql}")) for index, sql in [
            ("ix_metric_points_series", f"SELECT step, value FROM metric_points WHERE run_id = {run_id} "
                                        "AND key = 'loss' AND step > 10 ORDER BY step"),
            ("ix_group_stats_series", f"SELECT max(step) FROM group_stats WHERE run_id = {run_id} AND \"group\" = 'g0'"),
        ]}
    for index, plan in plans.items():
        assert f"Index Only Scan using {index}" in plan or f"Index Only Scan Backward using {index}" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan


def test_a_bare_postgresql_url_gets_the_installed_driver():
    for url in ("postgresql://u:p@db:5432/studio", "postgres://u:p@db:5432/studio"):
        store = Store(url, migrate=False)  # no connection yet: only the URL is read
        assert store.url == "postgresql+psycopg://u:p@db:5432/studio"
        assert store.write_engine.dialect.driver == "psycopg"
        store.dispose()


def test_timestamps_read_back_timezone_aware(store):
    run_id = submit_run(store, SyntheticConfig(max_steps=1))
    with store.read() as s:
        assert s.get(Run, run_id).created_at.tzinfo is not None
        assert s.execute(text("SELECT 1")).scalar() == 1


def test_the_store_package_imports_nothing_of_the_engine():
    """db/ is the layer both sides use: importing every module of it (queue, reads, writes, paths, the metric
    contract) loads no engine module, so the store cannot pull in torch or the data loaders."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = sorted(p.stem for p in (root / "db").glob("*.py") if p.stem != "__init__")
    assert {"queue", "reads", "writes", "session", "paths", "metric_keys"} <= set(modules)
    code = ("import sys\n" + "".join(f"import db.{m}\n" for m in modules) +
            "print(sorted(m for m in sys.modules if m == 'engine' or m.startswith('engine.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
