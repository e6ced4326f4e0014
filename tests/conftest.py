"""Shared fixtures: every test gets its own studio home and SQLite file, so tests never touch a user's store."""

from __future__ import annotations

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


@pytest.fixture
def db_url(studio_home):
    return f"sqlite:///{studio_home / 'studio.db'}"


@pytest.fixture
def store(db_url):
    from db.session import Store

    s = Store(db_url)
    yield s
    s.dispose()


