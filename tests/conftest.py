"""Shared fixtures: every test gets its own studio home and database, so tests never touch a user's store.

The database is a SQLite file unless the test is marked ``backends(...)``: it then runs once per backend named,
on PostgreSQL in a fresh database of a throw-away server started once per session (tests/postgres_server.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Model fixtures (the tiny test model) are available to every test module.
pytest_plugins = ["tests.model_fixtures"]

SHARED_CACHE = Path(__file__).resolve().parent.parent / "test-artifacts" / "studio_home"


@pytest.fixture
def studio_home(tmp_path, monkeypatch):
    """A fresh home per test (own database, runs, checkpoints), sharing only the converted model caches:
    converting SmolLM2 or materialising the reward model once per machine, not once per test."""
    home = tmp_path / "studio_home"
    home.mkdir()
    for cache in ("models", "tokenizers", "reward_models"):
        (SHARED_CACHE / cache).mkdir(parents=True, exist_ok=True)
        (home / cache).symlink_to(SHARED_CACHE / cache, target_is_directory=True)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("STUDIO_DB_URL", raising=False)
    return home


BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is None or "backend" not in metafunc.fixturenames:
        return
    unknown = set(marker.args) - set(BACKENDS)
    if unknown or not marker.args:
        raise pytest.UsageError(f"backends({', '.join(marker.args)}): name one or more of {', '.join(BACKENDS)}")
    metafunc.parametrize("backend", list(marker.args), indirect=True)


@pytest.fixture
def backend(request):
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_server():
    from tests.postgres_server import REQUIRE_ENV, Cluster, Unavailable

    try:
        import psycopg  # noqa: F401

        cluster = Cluster()
    except (ImportError, Unavailable) as e:
        reason = f"no PostgreSQL server for the postgresql variants: {e}"
        if os.environ.get(REQUIRE_ENV) == "require":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=require)", pytrace=False)
        pytest.skip(reason)
    yield cluster
    cluster.stop()


@pytest.fixture
def db_url(backend, studio_home, request):
    if backend == "sqlite":
        yield f"sqlite:///{studio_home / 'studio.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def store(db_url):
    from db.session import Store

    s = Store(db_url)
    yield s
    s.dispose()


