"""Mirroring runs to trackers (engine/runs/trackers.py): real trackio, through the real engine and run process,
read back from trackio's own SQLite store; a resumed run continues its trackio run without duplicate steps; a
failing tracker is an event and never fails the run; the submit-time refusals name what to change."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import delete, select

from db import metric_keys as mk
from db import queue
from db.models import Checkpoint, RunStatus
from engine.config import ConfigError, SyntheticConfig, parse_config
from engine.submission import submit_run
from tests.helpers import ROOT, run_cli, start_engine, wait_for
from tests.runs_fixtures import grpo_config, group_rows, metrics_by_step

# Read in a separate interpreter: trackio fixes its folder (TRACKIO_DIR) when it is imported.
_READ = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
project = sys.argv[1]
runs = SQLiteStorage.get_runs(project)
print(json.dumps({"runs": runs, "logs": {r: SQLiteStorage.get_logs(project, r) for r in runs}}, default=str))
"""


def read_trackio(folder, project: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _READ, project], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "TRACKIO_DIR": str(folder)}, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def messages(store, run_id: int, level: str | None = None) -> list[str]:
    return [e.message for e in reversed(queue.events(store, run_id)) if level is None or e.level == level]


@pytest.fixture
def default_trackio_dir(studio_home, monkeypatch):
    """No TRACKIO_DIR of the user's: the run process puts trackio under $STUDIO_HOME/trackio."""
    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    return studio_home / "trackio"


def test_a_group_robust_grpo_run_is_mirrored_to_trackio(store, db_url, tiny_model_dir, default_trackio_dir):
    cfg = grpo_config(str(tiny_model_dir), algorithm="gr_grpo", trackers=["trackio"], tracker_project="e2e")
    run_id = submit_run(store, parse_config(cfg))
    out = run_cli("engine", "--once", "--db", db_url, timeout=600)
    assert out.returncode == 0, out.stderr
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.completed, (run.error, messages(store, run_id))
    assert not [m for m in messages(store, run_id, "warning") if "tracker" in m], messages(store, run_id)
    started = [m for m in messages(store, run_id) if m.startswith("mirroring to trackio")]
    assert len(started) == 1 and str(default_trackio_dir) in started[0] and "trackio show" in started[0], started

    got = read_trackio(default_trackio_dir, "e2e")
    (name,) = got["runs"]  # one trackio run, named after the studio run and its folder
    assert name.endswith(f"[{run_id}-{run.folder_token}]") and run.name in name
    by_step = {log["step"]: log for log in got["logs"][name]}
    stored = metrics_by_step(store, run_id)
    assert sorted(by_step) == sorted(stored) == [0, 1, 2]  # step 0: the held-out point before training
    for step, metrics in stored.items():
        for key, value in metrics.items():
            if value is not None:
                assert math.isclose(by_step[step][key], value, rel_tol=1e-9, abs_tol=1e-12), (step, key)
    groups = group_rows(store, run_id)
    for step in (1, 2):
        for group, row in groups[step].items():  # the group weights, the run page's headline chart
            assert math.isclose(by_step[step][mk.group_weight(group)], row["weight"], rel_tol=1e-9)
            if row["reward_mean"] is not None:
                assert math.isclose(by_step[step][f"group/{group}/reward_mean"], row["reward_mean"], rel_tol=1e-9)
        table = by_step[step]["samples"]
        assert table["_type"] == "trackio.table"
        assert len(table["_value"]) == 3  # samples_logged
        first = table["_value"][0]
        assert first["step"] == step and first["prompt"] and isinstance(first["completion"], str)
        assert "reward/length" in first and first["group"] in groups[step]


def test_a_resumed_run_continues_its_trackio_run_without_duplicate_steps(store, db_url, default_trackio_dir):
    steps = 300
    run_id = submit_run(store, SyntheticConfig(max_steps=steps, checkpoint_every=5, n_val=200, n_test_states=200,
                                               seed=3, trackers=["trackio"], tracker_project="resume"))
    engine = start_engine(db_url)
    wait_for(lambda: queue.get_run(store, run_id).last_step >= 8, what="run to make progress")
    engine.send_signal(signal.SIGTERM)  # finish the step, checkpoint it, hand the run back
    out, _ = engine.communicate(timeout=120)
    assert engine.returncode == 0, out
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.queued and run.resume, out
    stopped_at = run.last_step
    # As if the process had died after logging steps past its last checkpoint: the resumed run redoes those
    # steps, and trackio, which has them already, must not get them twice.
    resume_from = (stopped_at - 1) // 5 * 5
    with store.write() as s:
        s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step > resume_from))
    out = run_cli("engine", "--once", "--db", db_url, timeout=600)
    assert out.returncode == 0, out.stderr
    assert queue.get_run(store, run_id).status == RunStatus.completed, messages(store, run_id)
    resumed = [m for m in messages(store, run_id) if m.startswith("mirroring to trackio")]
    assert len(resumed) == 2 and f"holds steps up to {stopped_at}" in resumed[1], resumed

    got = read_trackio(default_trackio_dir, "resume")
    assert len(got["runs"]) == 1, got["runs"]  # the same trackio run, continued
    logs = got["logs"][got["runs"][0]]
    assert [log["step"] for log in logs] == list(range(1, steps + 1))  # each step once
    stored, groups = metrics_by_step(store, run_id), group_rows(store, run_id)
    for log in logs:
        assert math.isclose(log["train/loss"], stored[log["step"]]["train/loss"], rel_tol=1e-9), log["step"]
        for group, row in groups[log["step"]].items():  # the synthetic run keeps its weights in its group rows
            assert math.isclose(log[mk.group_weight(group)], row["weight"], rel_tol=1e-9), (log["step"], group)


def _execute_in_process(store, run_id: int) -> None:
    """The run process's own code path (engine.run_process), in this process so the tracker can be patched."""
    from engine.run_process import _execute

    run = queue.claim_next_run(store, "test-worker")
    assert run is not None and run.id == run_id
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _execute(store, run, "test-worker", run.lease, None)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("broken", ["init", "log", "finish"])
def test_a_failing_tracker_is_one_event_and_the_run_completes(store, studio_home, monkeypatch, broken):
    monkeypatch.setenv("TRACKIO_DIR", str(studio_home / "trackio"))  # before trackio's import reads it
    import trackio

    calls = []

    def fail(*args, **kwargs):
        calls.append(broken)
        raise RuntimeError("disk full")

    monkeypatch.setattr(trackio, broken, fail)
    run_id = submit_run(store, SyntheticConfig(max_steps=20, n_val=200, n_test_states=200, trackers=["trackio"]))
    _execute_in_process(store, run_id)

    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.completed and run.last_step == 20, (run.error, messages(store, run_id))
    assert sorted(s for s in metrics_by_step(store, run_id)) == list(range(1, 21))  # every step stored
    warnings = messages(store, run_id, "warning")
    phase = {"init": "start", "log": "step 1", "finish": "finish"}[broken]
    assert warnings == [f"tracker trackio failed at {phase}: RuntimeError: disk full; mirroring to trackio is off "
                        "for the rest of this attempt (the run goes on, and the studio's own store has every step)"]
    assert calls == [broken]  # switched off after the first failure: never called again


def test_an_unknown_or_repeated_tracker_or_a_bad_project_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as e:
        parse_config({"algorithm": "synthetic", "trackers": ["mlflow"]})
    assert e.value.problems == {"trackers": "unknown tracker \"mlflow\": choose from trackio, wandb, or leave "
                                            "trackers empty"}
    with pytest.raises(ConfigError) as e:
        parse_config({"algorithm": "synthetic", "trackers": ["trackio", "trackio"]})
    assert "list each tracker once" in e.value.problems["trackers"]
    with pytest.raises(ConfigError) as e:
        parse_config({"algorithm": "synthetic", "trackers": ["trackio"], "tracker_project": "my project/1"})
    assert "letters, digits" in e.value.problems["tracker_project"]
    cfg = parse_config({"algorithm": "gr_dpo", "trackers": ["trackio", "wandb"], "tracker_project": "x.y-z_1"})
    assert parse_config(cfg.model_dump_json()) == cfg  # the stored config round-trips


def test_a_tracker_that_is_not_installed_is_refused_at_submit_naming_the_extra(store, monkeypatch):
    from engine.runs import trackers

    monkeypatch.setitem(trackers.TRACKERS, "wandb", trackers.TrackerSpec("no_such_module_here", "wandb", "W&B"))
    with pytest.raises(ConfigError) as e:
        submit_run(store, parse_config({"algorithm": "synthetic", "trackers": ["wandb"]}))
    assert e.value.problems == {"trackers": "wandb is not installed: install it with `pip install -e '.[wandb]'` "
                                            "(from the studio's folder), or remove 'wandb' from trackers"}
    assert queue.list_runs(store) == []  # nothing queued
    assert trackers.available_trackers() == ["trackio"]
    from engine.config import TRACKER_NAMES

    assert tuple(trackers.TRACKERS) == TRACKER_NAMES  # every name a config may give has its backend


def test_cli_submit_names_the_bad_tracker(studio_home, tmp_path, db_url):
    from tests.helpers import assert_user_error

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"algorithm": "synthetic", "trackers": ["tensorboard"]}))
    assert_user_error(run_cli("submit", str(path), "--db", db_url), "trackers", "unknown tracker", "trackio, wandb")


def test_step_payload_flattens_group_rows_and_drops_non_finite_values():
    from engine.runs.trackers import sample_rows, step_payload

    payload = step_payload({"loss": 0.5, "kl": float("nan"), "weight/a": 0.7},
                           [{"group": "a", "weight": 0.1, "loss": 0.2, "count": 3, "reward_mean": None},
                            {"group": "b", "weight": 0.3, "accuracy": float("inf")}])
    # the metric the runner logged wins over the group row's copy; NaN / inf / None are left out, as in the store
    assert payload == {"loss": 0.5, "weight/a": 0.7, "group/a/loss": 0.2, "group/a/count": 3.0, "weight/b": 0.3}
    columns, rows = sample_rows(4, [{"group": "a", "prompt": "p", "completion": "c", "reward": 1.0,
                                     "rewards": {"bias_rm": 0.5, "length": float("nan")}, "advantage": 0.2}])
    assert columns == ["step", "group", "prompt", "completion", "reward", "advantage", "reward/bias_rm",
                       "reward/length"]
    assert rows == [[4, "a", "p", "c", 1.0, 0.2, 0.5, None]]


def test_new_run_form_offers_the_installed_trackers_and_queues_the_choice(store, studio_home, monkeypatch):
    from engine.runs import trackers
    from tests.app_helpers import open_page

    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    monkeypatch.setitem(trackers.TRACKERS, "wandb", trackers.TrackerSpec("no_such_module_here", "wandb", "W&B"))
    at = open_page("views/new_run.py")
    at.selectbox(key="new.algorithm").set_value("synthetic").run()
    box = at.multiselect(key="cfg.synthetic.trackers")
    assert box.options == ["trackio"]  # only what is installed here
    assert "Not installed here: wandb (`pip install -e '.[wandb]'`)" in box.help
    box.set_value(["trackio"]).run()
    at.text_input(key="cfg.synthetic.tracker_project").set_value("my-project").run()
    assert [c.value for c in at.code] == [f'TRACKIO_DIR={studio_home / "trackio"} trackio show --project "my-project"']
    at.button(key="new.submit").click().run()
    assert not at.exception
    (run,) = queue.list_runs(store)
    config = json.loads(run.config_json)
    assert config["trackers"] == ["trackio"] and config["tracker_project"] == "my-project"


def test_wandb_offline_mirror_where_wandb_is_installed(store, db_url, studio_home, monkeypatch):
    """The wandb extra is not part of dev (CI runs this only where wandb is installed): offline mode, no network or
    account, under $STUDIO_HOME/wandb, one offline run per studio run holding every step's metrics and weights."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (pip install -e '.[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_id = submit_run(store, SyntheticConfig(max_steps=5, n_val=200, n_test_states=200, trackers=["wandb"],
                                               tracker_project="offline"))
    out = run_cli("engine", "--once", "--db", db_url, timeout=600)
    assert out.returncode == 0, out.stderr
    run = queue.get_run(store, run_id)
    assert run.status == RunStatus.completed, messages(store, run_id)
    assert not [m for m in messages(store, run_id, "warning") if "tracker" in m], messages(store, run_id)
    assert any(m.startswith("mirroring to Weights & Biases project 'offline'") and "mode offline" in m
               for m in messages(store, run_id)), messages(store, run_id)
    (folder,) = (studio_home / "wandb" / "wandb").glob(f"offline-run-*-studio-{run_id}-{run.folder_token}")
    # The offline run's log (what `wandb sync` uploads) is protobuf; its history items hold each key and its value
    # as JSON text, so every stored value is in it, spelled as JSON spells it.
    (log,) = folder.glob("run-*.wandb")
    data = log.read_bytes()
    groups = group_rows(store, run_id)
    for step, metrics in metrics_by_step(store, run_id).items():
        assert json.dumps(metrics["train/loss"]).encode() in data, step
        for group, row in groups[step].items():
            assert mk.group_weight(group).encode() in data and json.dumps(row["weight"]).encode() in data
