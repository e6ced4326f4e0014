"""Chart and table queries: downsampling keeps extremes and the point budget, incremental reads, overview rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, update

from db.models import MetricPoint, Run, RunStatus, utcnow
from db.reads import (DEFAULT_MAX_POINTS, bucket_width, common_metric_keys, comparison, comparison_summary,
                      group_series, metric_series, runs_overview, samples)
from db.writes import write_comparison, write_step
from engine.config import parse_config
from engine.submission import submit_run

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _run(store, steps=50):
    return submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": steps}))


def _bulk(store, run_id, key, values):
    now = utcnow()
    with store.write() as s:
        s.execute(insert(MetricPoint), [{"run_id": run_id, "step": i + 1, "key": key, "value": v, "time": now}
                                        for i, v in enumerate(values)])


def test_bucket_width_covers_span_within_budget():
    assert bucket_width(1, 10, 2000) == 1
    assert bucket_width(1, 4000, 2000) == 2
    assert bucket_width(1, 4001, 2000) == 3
    for first, last, budget in [(1, 99_999, 2000), (5, 123_456, 777), (0, 1, 1)]:
        w = bucket_width(first, last, budget)
        assert (last - first) // w + 1 <= budget
        assert w == 1 or (last - first) // (w - 1) + 1 > budget  # the smallest width that fits
    with pytest.raises(ValueError):
        bucket_width(1, 2, 0)


def test_full_resolution_when_few_points(store):
    rid = _run(store)
    for step in range(1, 11):
        write_step(store, rid, step, {"loss": step * 0.5, "kl": None if step == 3 else 0.1})
    got = metric_series(store, rid)
    assert set(got) == {"loss", "kl"}
    assert got["loss"].steps == list(range(1, 11))
    assert got["loss"].values == [s * 0.5 for s in range(1, 11)]
    assert not got["loss"].downsampled
    assert got["kl"].values[2] is None  # a NaN/None step stays a gap, not a dropped point


def test_downsampling_keeps_minima_maxima_and_budget(store):
    rid = _run(store)
    n = 10_000
    values = [float(i % 7) for i in range(n)]
    values[4321] = 1000.0  # one spike
    values[8765] = -1000.0  # one dip
    _bulk(store, rid, "loss", values)
    got = metric_series(store, rid, ["loss"], max_points=500)["loss"]
    assert got.downsampled and len(got) <= 500
    assert max(got.hi) == 1000.0 and min(got.lo) == -1000.0
    assert got.steps == sorted(got.steps) and got.steps[-1] == n  # each bucket is shown at its last step
    # Bucket means agree with a direct computation.
    w = bucket_width(1, n, 500)
    first_bucket = values[:w]
    assert got.values[0] == pytest.approx(sum(first_bucket) / w)
    assert got.steps[0] == w
    full = metric_series(store, rid, ["loss"], max_points=None)["loss"]
    assert len(full) == n and not full.downsampled


def test_incremental_reads_only_new_steps(store):
    rid = _run(store)
    for step in range(1, 6):
        write_step(store, rid, step, {"loss": float(step)},
                   [{"group": "a", "weight": 0.5}, {"group": "b", "weight": 0.5}])
    first = metric_series(store, rid)
    assert first["loss"].last_step == 5
    for step in range(6, 9):
        write_step(store, rid, step, {"loss": float(step)},
                   [{"group": "a", "weight": 0.4}, {"group": "b", "weight": 0.6}])
    new = metric_series(store, rid, since_step=5)
    assert new["loss"].steps == [6, 7, 8]
    first["loss"].extend(new["loss"])
    first["loss"].extend(new["loss"])  # re-reading the same steps does not duplicate them
    assert first["loss"].steps == list(range(1, 9))
    g = group_series(store, rid, "weight", since_step=6)
    assert set(g) == {"a", "b"} and g["b"].steps == [7, 8] and g["b"].values == [0.6, 0.6]
    assert metric_series(store, rid, since_step=8) == {}


def test_group_series_rejects_unknown_field(store):
    rid = _run(store)
    with pytest.raises(ValueError, match="unknown group field"):
        group_series(store, rid, "weight; drop table runs")


def test_runs_overview_progress_reward_worst_group_and_queue(store):
    a = _run(store, steps=100)
    b = _run(store, steps=10)
    c = _run(store, steps=10)
    for step in range(1, 26):
        write_step(store, a, step, {"reward/mean": 0.1 * step, "val/worst_group_loss": 3.0 - 0.1 * step,
                                    "time/step": 2.0})
    start = utcnow() - timedelta(seconds=50)
    with store.write() as s:
        s.execute(update(Run).where(Run.id == a).values(status=RunStatus.running, started_at=start))
    rows = {r.id: r for r in runs_overview(store, now=start + timedelta(seconds=50))}
    ra = rows[a]
    assert (ra.last_step, ra.total_steps) == (25, 100)
    assert ra.reward == pytest.approx(2.5) and ra.reward_key == "reward/mean"
    assert ra.worst_group == pytest.approx(0.5) and ra.worst_group_key == "val/worst_group_loss"
    # 2 s/step (the steps' own timer), 75 steps left, the last one just written
    assert ra.elapsed_s == pytest.approx(50) and ra.eta_s == pytest.approx(150, abs=1)
    assert ra.model == "-"  # synthetic runs have no model
    assert (rows[b].queue_position, rows[c].queue_position, ra.queue_position) == (1, 2, None)
    assert rows[b].reward is None and rows[b].eta_s is None


def test_comparison_pairs_sides_and_summarises_per_group(store):
    rid = submit_run(store, parse_config({"algorithm": "compare"}))
    rows = []
    for i, (g, ra, rb) in enumerate([("gender", 0.2, 0.8), ("race", 0.5, 0.4), ("gender", 0.4, 0.6)]):
        rows += [{"prompt_index": i, "group": g, "prompt": f"p{i}", "side": "a", "model": "base", "completion": f"a{i}",
                  "reward": ra},
                 {"prompt_index": i, "group": g, "prompt": f"p{i}", "side": "b", "model": "tuned",
                  "completion": f"b{i}", "reward": rb}]
    write_comparison(store, rid, rows)
    got = comparison(store, rid)
    assert [(r.group, r.prompt_index) for r in got] == [("gender", 0), ("gender", 2), ("race", 1)]
    assert (got[0].completion_a, got[0].completion_b, got[0].model_b) == ("a0", "b0", "tuned")
    assert got[0].diff == pytest.approx(0.6)
    summ = {s.group: s for s in comparison_summary(got)}
    assert summ["gender"].n == 2 and summ["gender"].mean_a == pytest.approx(0.3)
    assert summ["gender"].mean_diff == pytest.approx(0.4) and summ["gender"].b_better == 2
    assert summ["race"].mean_diff == pytest.approx(-0.1) and summ["race"].b_better == 0


def test_samples_filter_by_group_and_step(store):
    rid = _run(store)
    for step in range(1, 5):
        write_step(store, rid, step, {"loss": 1.0}, samples=[
            {"group": g, "prompt": "p", "completion": f"{g}{step}", "reward": 0.5, "advantage": 0.1}
            for g in ("x", "y")])
    got = samples(store, rid, groups=["y"], step_min=2, step_max=3)
    assert [(s.group, s.step) for s in got] == [("y", 3), ("y", 2)]


def test_common_metric_keys(store):
    a, b = _run(store), _run(store)
    write_step(store, a, 1, {"loss": 1.0, "kl": 0.1})
    write_step(store, b, 1, {"loss": 1.0, "entropy": 0.1})
    assert common_metric_keys(store, [a, b]) == ["loss"]
    assert common_metric_keys(store, [a]) == ["kl", "loss"]
    assert DEFAULT_MAX_POINTS <= 5000  # "never more than a few thousand points per series"
