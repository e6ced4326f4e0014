"""docker-compose.yml checked by a real Compose-spec parser (no Docker engine runs here)."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

compose_spec = pytest.importorskip("compose_spec")


def load() -> dict:
    return compose_spec.PyCompose.from_yaml((ROOT / "docker-compose.yml").read_text()).to_dict()


def test_compose_file_parses_with_web_gpu_engine_and_optional_postgres():
    d = load()
    assert set(d["services"]) == {"web", "engine", "postgres"}
    engine = d["services"]["engine"]
    (device,) = engine["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert engine["stop_signal"] == "SIGTERM"


def test_services_share_the_data_volume_and_database():
    d = load()
    assert "studio-data" in d["volumes"]
    for name in ("web", "engine"):
        svc = d["services"][name]
        assert "studio-data:/data" in svc["volumes"]
        # The SQLite file in the shared volume unless .env names another database (the postgres profile).
        assert svc["environment"]["STUDIO_DB_URL"] == "${STUDIO_DB_URL:-sqlite:////data/studio.db}"


def test_postgres_is_an_optional_profile_with_its_own_volume_and_a_readiness_check():
    d = load()
    pg = d["services"]["postgres"]
    assert pg["image"] == "postgres:16" and pg["profiles"] == ["postgres"]
    assert "studio-postgres" in d["volumes"] and "studio-postgres:/var/lib/postgresql/data" in pg["volumes"]
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "ports" not in pg  # reached on the project's network only
    assert {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"} <= set(pg["environment"])
    for name in ("web", "engine"):
        # Waited for when its profile is on; without it (not required) the studio starts on SQLite.
        assert d["services"][name]["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}


def test_the_engine_can_be_scaled():
    engine = load()["services"]["engine"]
    # A fixed name or host port would make `docker compose up --scale engine=2` fail on the second container.
    assert "container_name" not in engine and "ports" not in engine


def test_health_checks_probe_the_web_endpoint_and_the_engine_heartbeat():
    d = load()
    web = d["services"]["web"]["healthcheck"]["test"]
    assert any("/_stcore/health" in part for part in web)
    assert d["services"]["engine"]["healthcheck"]["test"][1:3] == ["studio", "health"]


def test_web_is_published_on_localhost_and_needs_a_password():
    d = load()
    web = d["services"]["web"]
    assert all(str(p).startswith("127.0.0.1:") for p in web["ports"])
    assert "STUDIO_PASSWORD" in web["environment"]


def test_the_parser_rejects_an_invalid_compose_file():
    with pytest.raises(ValueError):
        compose_spec.PyCompose.from_yaml("services:\n  web:\n    image: x\n    ports: ['bad:host:ip:spec']\n")


def test_the_image_runs_the_studio_under_an_init_that_forwards_signals():
    # As PID 1 a process gets no default signal handling; tini forwards `docker stop`'s SIGTERM and reaps
    # orphans, and the exec-form CMD keeps `studio` a direct child (no shell swallowing the signal).
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in lines
    assert any(ln.startswith("RUN apt-get") and " tini" in ln for ln in lines)
    (cmd,) = [ln for ln in lines if ln.startswith("CMD")]
    assert cmd.startswith("CMD [")


def test_the_image_has_the_postgresql_driver():
    text = (ROOT / "Dockerfile").read_text()
    assert 'pip install -e ".[${EXTRA},postgres]"' in text
