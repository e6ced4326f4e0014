"""The run process's own output: written to a file in the run's folder (every attempt appended), echoed to the
engine's terminal, and shown in the Run page's Logs view."""

from __future__ import annotations

from db import queue
from db.paths import run_output_log
from engine.config import SyntheticConfig
from engine.submission import submit_run
from tests.app_helpers import open_page
from tests.helpers import run_cli

MARK = "child-says-hello-7f3a"


def test_run_output_goes_to_the_runs_file_and_the_engine_terminal(store, db_url, tmp_path):
    # Every Python process started with this environment prints MARK once at start-up: the engine itself (to
    # its own stdout) and the run process (to the run's output file, which the engine echoes).
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"print({MARK!r}, flush=True)\n")
    runs = [submit_run(store, SyntheticConfig(max_steps=2, n_val=50, n_test_states=50)) for _ in range(2)]
    earlier = run_output_log(runs[0], queue.get_run(store, runs[0]).folder_token)
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("what an earlier attempt printed\n")
    out = run_cli("engine", "--once", "--db", db_url, env={"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    for rid in runs:
        log = run_output_log(rid, queue.get_run(store, rid).folder_token).read_text()
        assert f"run {rid} started by" in log and log.count(MARK) == 1, log
    assert out.stdout.count(MARK) == 3, out.stdout  # the engine's own line and one echoed per run
    assert earlier.read_text().startswith("what an earlier attempt printed\n=====")  # attempts append


def test_logs_view_shows_the_process_output(store):
    from tests.app_helpers import seed_synthetic

    rid = seed_synthetic(store, steps=2)
    path = run_output_log(rid, queue.get_run(store, rid).folder_token)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("===== start\nloading 10%\rloading 100%\nWARNING something odd\n")
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(rid).run()
    assert not at.exception
    (out,) = [c.value for c in at.code if "WARNING something odd" in c.value]
    assert "loading 100%" in out and "loading 10%" not in out  # a progress bar's last state only
    at.text_input(key=f"run.log_search.{rid}").set_value("warning").run()
    (out,) = [c.value for c in at.code if "something odd" in c.value]
    assert "loading" not in out
