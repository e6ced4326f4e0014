"""Resume equals an uninterrupted run (same metrics within float tolerance), and a run killed mid-step leaves the
store consistent and resumable through `studio resume` and the worker."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.helpers import run_cli, start_engine, wait_for
from tests.runs_fixtures import (
    deterministic,
    group_rows,
    grpo_config,
    metrics_by_step,
    preference_config,
    run_in_process,
)


def _assert_same_metrics(a: dict, b: dict, rel: float = 1e-4, abs_: float = 1e-5) -> None:
    assert sorted(a) == sorted(b)
    for step in a:
        da, db = deterministic(a[step]), deterministic(b[step])
        assert sorted(da) == sorted(db), step
        for key in da:
            if da[key] is None or db[key] is None:
                assert da[key] is None and db[key] is None, (step, key)
            else:
                assert db[key] == pytest.approx(da[key], rel=rel, abs=abs_), (step, key, da[key], db[key])


@pytest.mark.parametrize("algorithm", ["gr_grpo", "gr_dpo"])
def test_resume_equals_uninterrupted(store, tiny_model_dir, algorithm):
    if algorithm == "gr_grpo":
        cfg = grpo_config(str(tiny_model_dir), algorithm="gr_grpo", max_steps=3, eta=0.5, num_iterations=2,
                          eval_prompts=0, lr_scheduler="cosine", warmup_steps=1)
    else:
        cfg = preference_config(str(tiny_model_dir), "gr_dpo", max_steps=3, eta=0.5, batch_size=2,
                                lr_scheduler="linear")
    full = run_in_process(store, cfg)
    cut = run_in_process(store, cfg, stop_after=2)
    assert sorted(metrics_by_step(store, cut)) == [1, 2]
    run_in_process(store, cfg, run_id=cut, resume=True)
    _assert_same_metrics(metrics_by_step(store, full), metrics_by_step(store, cut))
    gf, gc = group_rows(store, full), group_rows(store, cut)
    for step in (1, 2, 3):
        for g in gf[step]:
            assert gc[step][g]["weight"] == pytest.approx(gf[step][g]["weight"], rel=1e-5)


def test_run_killed_mid_step_leaves_a_consistent_resumable_store(store, db_url, tiny_model_dir, tmp_path):
    from db import queue
    from db.models import RunStatus

    cfg = grpo_config(str(tiny_model_dir), max_steps=4, checkpoint_every=1, eval_prompts=0, max_new_tokens=8)
    path = tmp_path / "grpo.json"
    path.write_text(json.dumps(cfg))
    out = run_cli("submit", str(path), "--db", db_url)
    assert out.returncode == 0, out.stderr
    rid = int(out.stdout.split()[2])
    engine = start_engine(db_url, "--once")
    try:
        wait_for(lambda: queue.latest_checkpoint(store, rid) is not None, timeout=300, what="the first checkpoint")
        pid = queue.get_run(store, rid).pid
        os.kill(pid, signal.SIGKILL)  # no chance to clean up: as an OOM kill or a power cut would do
        engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            engine.kill()
    run = queue.get_run(store, rid)
    assert run.status == RunStatus.failed and "SIGKILL" in (run.error or "")
    before = metrics_by_step(store, rid)
    # every step in the store is whole (one transaction per step), and no step is past last_step
    keys = {frozenset(m) for m in before.values()}
    assert len(keys) == 1 and max(before) == run.last_step
    assert queue.latest_checkpoint(store, rid).step <= run.last_step

    out = run_cli("resume", str(rid), "--db", db_url)
    assert out.returncode == 0, out.stderr
    out = run_cli("engine", "--db", db_url, "--once", "--poll", "0.2", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    run = queue.get_run(store, rid)
    assert run.status == RunStatus.completed, run.error
    after = metrics_by_step(store, rid)  # raises if any metric of a step was written twice
    assert sorted(after) == [1, 2, 3, 4]
