"""The CLI as a user meets it: one clear line and exit code 2 for mistakes, never a traceback."""

from __future__ import annotations

import json

import pytest

from db import queue
from db.models import RunStatus
from engine.config import SyntheticConfig
from tests.helpers import assert_user_error, run_cli
from engine.submission import submit_run


def env(db_url: str) -> dict:
    return {"STUDIO_DB_URL": db_url}


@pytest.mark.parametrize("args, words", [
    (["submit", "/no/such/config.json"], ["does not exist"]),
    (["show", "999"], ["run 999 does not exist"]),
    (["cancel", "999"], ["run 999 does not exist"]),
    (["resume", "999"], ["run 999 does not exist"]),
    (["runs", "--status", "sleeping"], ["unknown status", "queued"]),
    (["engine", "--once", "--recover", "maybe"], ["--recover must be"]),
    (["export", "999", "--out", "/tmp/x"], ["run 999 does not exist"]),
    (["app", "--host", "0.0.0.0"], ["STUDIO_PASSWORD"]),
])
def test_user_mistakes_get_one_line(db_url, args, words):
    assert_user_error(run_cli(*args, env=env(db_url)), *words)


def test_invalid_config_names_the_field_and_the_fix(db_url, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"algorithm": "grpo", "group_size": 1, "learning_rate": -1}))
    out = run_cli("submit", str(bad), env=env(db_url))
    assert_user_error(out, "group_size", "at least 2", "learning_rate", "positive")


def test_malformed_json_config(db_url, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"algorithm": "grpo",')
    assert_user_error(run_cli("submit", str(bad), env=env(db_url)), "not valid JSON", "line 1")


def test_submit_run_and_watch_it_complete(db_url, tmp_path, store):
    cfg = tmp_path / "syn.json"
    cfg.write_text(json.dumps({"algorithm": "synthetic", "max_steps": 5, "n_val": 100, "n_test_states": 100}))
    out = run_cli("submit", str(cfg), "--set", "seed=2", env=env(db_url))
    assert out.returncode == 0 and "queued run 1" in out.stdout, out.stderr
    assert "queued" in run_cli("runs", env=env(db_url)).stdout
    assert run_cli("engine", "--once", env=env(db_url)).returncode == 0
    listing = run_cli("runs", env=env(db_url)).stdout
    assert "completed" in listing and "5/5" in listing
    shown = run_cli("show", "1", env=env(db_url)).stdout
    assert "val/worst_group_loss" in shown and "completed" in shown
    assert queue.get_run(store, 1).status == RunStatus.completed
    assert json.loads(queue.get_run(store, 1).config_json)["seed"] == 2


def test_cancel_resume_clone_delete_through_the_cli(db_url, store):
    run_id = submit_run(store, SyntheticConfig(max_steps=3, n_val=100, n_test_states=100))
    assert "cancelled" in run_cli("cancel", str(run_id), env=env(db_url)).stdout
    assert_user_error(run_cli("cancel", str(run_id), env=env(db_url)), "already cancelled")
    assert run_cli("resume", str(run_id), env=env(db_url)).returncode == 0
    assert queue.get_run(store, run_id).status == RunStatus.queued
    out = run_cli("clone", str(run_id), "--set", "seed=7", env=env(db_url))
    assert out.returncode == 0, out.stderr
    clone = queue.list_runs(store)[0]
    assert clone.parent_id == run_id and json.loads(clone.config_json)["seed"] == 7
    assert run_cli("delete", str(clone.id), "--yes", env=env(db_url)).returncode == 0
    assert_user_error(run_cli("show", str(clone.id), env=env(db_url)), "does not exist")


def test_health_reports_a_missing_engine(db_url):
    out = run_cli("health", "--max-age", "5", env=env(db_url))
    assert out.returncode == 1 and "no engine heartbeat" in out.stderr
