"""Shared fixtures: every test gets its own studio home and SQLite file, so tests never touch a user's store."""

from __future__ import annotations

import pytest


@pytest.fixture
def studio_home(tmp_path, monkeypatch):
    home = tmp_path / "studio_home"
    home.mkdir()
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


