"""Run page: chart figure specs, consistent group colours, incremental refresh, samples, events, checkpoints."""

from __future__ import annotations

from app.live import ChartCache, refresh
from app.palette import group_colours
from db.queue import get_run
from db.writes import record_checkpoint, write_step
from tests.app_helpers import chart_specs, open_page, seed_synthetic, texts


def _open_run(run_id):
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(run_id).run()
    assert not at.exception
    return at


def test_charts_show_group_weights_and_metric_panels(store):
    rid = seed_synthetic(store, steps=20)
    at = _open_run(rid)
    specs = chart_specs(at)
    assert {"Group weights", "Reward per group (mean ± std)", "Loss per group",
            "Worst group vs average: validation loss", "KL to reference", "Loss", "custom/thing"} <= set(specs)
    weights = {t["name"]: t for t in specs["Group weights"]["data"]}
    assert set(weights) == {"gender", "race"}
    assert weights["gender"]["x"] == list(range(1, 21))
    assert weights["race"]["y"][-1] == 0.5 + 0.5 * 20 / 100
    # The same group has the same colour in every chart.
    colours = group_colours(["gender", "race"])
    for title in ("Group weights", "Reward per group (mean ± std)", "Loss per group"):
        lines = [t for t in specs[title]["data"] if t.get("name") in colours]
        assert lines and all(t["line"]["color"] == colours[t["name"]] for t in lines), title
    # The reward chart carries a ± std band (two invisible-edged traces filled between).
    band = [t for t in specs["Reward per group (mean ± std)"]["data"] if t.get("fill") == "tonexty"]
    assert len(band) == 2 and band[0]["y"][0] == 0.5 - 0.1
    worst = {t["name"]: t["line"]["color"] for t in specs["Worst group vs average: validation loss"]["data"]}
    assert worst["validation loss (worst group)"] != worst["validation loss (average)"]
    assert "Other metrics (1)" in [e.label for e in at.expander]


def test_samples_events_and_checkpoints(store, tmp_path):
    rid = seed_synthetic(store, steps=5)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "state.json").write_text("{}")
    record_checkpoint(store, rid, 5, str(ck))
    at = _open_run(rid)
    sample_df = next(d.value for d in at.dataframe if "completion" in d.value.columns)
    assert len(sample_df) == 10 and set(sample_df["group"]) == {"gender", "race"}
    at.multiselect(key=f"run.sample_groups.{rid}").set_value(["race"]).run()
    sample_df = next(d.value for d in at.dataframe if "completion" in d.value.columns)
    assert set(sample_df["group"]) == {"race"}
    events = next(d.value for d in at.dataframe if "message" in d.value.columns)
    assert any("queued" in m for m in events["message"])
    at.button(key="run.zip").click().run()
    assert not at.exception
    assert len(at.get("download_button")) >= 1


def test_finished_run_has_no_timer_and_active_run_says_waiting(store):
    rid = seed_synthetic(store, steps=0)
    at = _open_run(rid)
    assert "the engine has not taken the run yet" in texts(at)
    assert not at.button(key="run.cancel").disabled
    at.button(key="run.cancel").click().run()
    assert get_run(store, rid).status.value == "cancelled"


def test_refresh_reads_only_new_steps_and_restarts_after_a_resume(store):
    rid = seed_synthetic(store, steps=10)
    cache = refresh(store, ChartCache(rid, False), 10)
    assert cache.last_step == 10 and cache.full_reads == 1
    assert cache.metrics["train/loss"].steps == list(range(1, 11))
    for step in (11, 12):
        write_step(store, rid, step, {"train/loss": 0.01}, [{"group": "gender", "weight": 0.9}])
    cache = refresh(store, cache, 12)
    assert cache.full_reads == 1 and cache.reads == 2  # incremental, not a re-read
    assert cache.metrics["train/loss"].steps == list(range(1, 13))
    assert cache.groups["weight"]["gender"].values[-1] == 0.9
    cache = refresh(store, cache, 12)  # nothing new: nothing appended
    assert len(cache.metrics["train/loss"]) == 12
    # A resumed run rewrote from step 8: the cache starts over.
    from db.writes import truncate_after

    truncate_after(store, rid, 8)
    cache = refresh(store, cache, 8)
    assert cache.full_reads == 2 and cache.metrics["train/loss"].steps == list(range(1, 9))


def test_run_page_empty_state(store):
    at = open_page("views/run.py")
    assert "No runs yet" in texts(at)


def test_logs_view_shows_every_event_in_full_and_filters(store):
    """The run's logs (its event log: the engine stores no other run output), tracebacks kept whole."""
    from db.queue import add_event

    rid = seed_synthetic(store, steps=2)
    with store.write() as s:
        add_event(s, rid, "setup: loading the data")
        add_event(s, rid, "run failed:\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom",
                  level="error")
    at = _open_run(rid)
    (log,) = [c.value for c in at.code if "loading the data" in c.value]
    lines = log.splitlines()
    assert any(line.endswith("INFO     queued (synthetic, 50 steps)") for line in lines)
    assert "ERROR    run failed:" in log and lines[-1].strip() == "ValueError: boom"  # whole traceback, in order
    at.multiselect(key=f"run.log_levels.{rid}").set_value(["error"]).run()
    (log,) = [c.value for c in at.code if "run failed" in c.value]
    assert "queued" not in log
    at.text_input(key=f"run.log_search.{rid}").set_value("nothing like this").run()
    assert "(nothing matches)" in [c.value for c in at.code]
