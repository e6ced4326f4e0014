"""Evaluations in the app: what each result evaluated (migration 0004), the before/after table pairing a run's
step-0 and last-step evaluations as two columns, CLI results in columns of their own."""

from __future__ import annotations

from db.writes import record_checkpoint, record_evaluation
from engine.config import parse_config
from engine.runs.context import RunContext
from engine.submission import submit_run
from tests.app_helpers import open_page

BASE = "embedded:smollm2-135m-instruct"


def _heldout(mean: float, age: float, race: float) -> dict:
    return {"reward/mean": mean, "reward/age": age, "reward/race": race, "reward/bias_rm/mean": mean,
            "reward/nan_count": 0.0, "kl": 0.0 if mean < 0.8 else 0.02, "completion/len_mean": 30.0}


def _tuned_run(store, tmp_path) -> int:
    """A GRPO run that evaluated itself before training (0.762) and at its last step (0.842), as the runner does
    (RunContext.record_evaluation), plus a `studio eval` result of its checkpoint (source "cli")."""
    cfg = parse_config({"algorithm": "grpo", "name": "tuned", "max_steps": 50})
    rid = submit_run(store, cfg)
    ctx = RunContext(store, rid, cfg, resume=False)
    ctx.record_evaluation("heldout_reward", _heldout(0.762, 0.70, 0.80), model=cfg.model, dataset_version="v", step=0)
    ctx.record_evaluation("heldout_reward", _heldout(0.842, 0.83, 0.85), model=cfg.model, dataset_version="v", step=50)
    record_checkpoint(store, rid, 50, str(tmp_path))
    record_evaluation(store, run_id=rid, model=f"run:{rid}", benchmark="heldout_reward", dataset_version="v",
                      metrics=_heldout(0.9, 0.88, 0.92), step=50, checkpoint=str(tmp_path), evaluated_model=BASE,
                      evaluated_run_id=rid, evaluated_step=50, model_path="/exports/x", source="cli")
    return rid


def _before_after(at):
    """The before/after tables (one per benchmark) as one frame. AppTest does not expose a dataframe's key: they
    are found by their columns (the paired-change table has no benchmark column)."""
    import pandas as pd

    tables = [d.value for d in at.dataframe if {"unbiased / better", "benchmark"} <= set(d.value.columns)]
    assert tables
    return pd.concat(tables, ignore_index=True)


def _cell(table, group: str, metric: str, column: str) -> str:
    row = table[(table["group"] == group) & (table["metric"] == metric)]
    assert len(row) == 1, (group, metric, list(table["metric"]))
    return str(row.iloc[0][column])


def test_the_context_records_what_was_evaluated(store, tmp_path):
    from db.reads import evaluations

    rid = _tuned_run(store, tmp_path)
    evs = evaluations(store)
    assert [(e.evaluated_model, e.evaluated_run_id, e.evaluated_step, e.source) for e in evs] == [
        (BASE, rid, 0, "run"), (BASE, rid, 50, "run"), (BASE, rid, 50, "cli")]
    assert evs[2].model_path == "/exports/x"


def test_before_after_pairs_step_0_and_the_last_step_as_two_columns(store, tmp_path):
    rid = _tuned_run(store, tmp_path)
    before, after = f"run #{rid} tuned step 0 (before)", f"run #{rid} tuned step 50 (after)"
    cli = f"studio eval: run #{rid} tuned step 50"
    for page in ("views/compare.py", "views/run.py"):
        at = open_page(page)
        assert not at.exception, at.exception
        table = _before_after(at)
        assert [c for c in table.columns if c.startswith(("run #", "studio eval"))] == [before, after, cli]
        assert _cell(table, "all", "reward mean", before) == "0.762"
        assert _cell(table, "all", "reward mean", after) == "0.842"
        assert _cell(table, "all", "reward mean", cli) == "0.900"
        assert _cell(table, "all", "worst group", before) == "0.700"  # the lowest group mean, derived
        assert _cell(table, "race", "reward mean", after) == "0.850"
        # overall figures first, then per group; the reward's direction is stated
        assert list(table["group"])[:1] == ["all"] and list(table["group"])[-1] == "race"
        assert _cell(table, "all", "reward mean", "unbiased / better").startswith("higher")


def test_rows_from_before_the_migration_are_inferred_and_shown(store):
    """Old rows carry no evaluated_* fields: a training run's own rows (no checkpoint) still pair by step, an old
    CLI result of a base model gets its own column."""
    rid = submit_run(store, parse_config({"algorithm": "grpo", "name": "old"}))
    for step, mean in ((0, 0.5), (3, 0.6)):
        record_evaluation(store, run_id=rid, model=BASE, benchmark="heldout_reward", dataset_version="v",
                          metrics=_heldout(mean, mean, mean), step=step)
    record_evaluation(store, run_id=None, model=BASE, benchmark="crows_pairs", dataset_version="v",
                      metrics={"stereotype_score": 61.0, "race/stereotype_score": 70.0, "n": 10.0,
                               "ci": {"stereotype_score": [55.0, 67.0]}})
    at = open_page("views/compare.py")
    assert not at.exception, at.exception
    table = _before_after(at)
    assert _cell(table, "all", "reward mean", f"run #{rid} old step 0 (before)") == "0.500"
    assert _cell(table, "all", "reward mean", f"run #{rid} old step 3 (after)") == "0.600"
    assert _cell(table, "all", "stereotype_score", f"studio eval: {BASE}") == "61.0 [55.0, 67.0]"
    assert _cell(table, "all", "stereotype_score", "unbiased / better") == "50 = unbiased"
    # one table per benchmark, showing only the columns with its results (nothing behind a horizontal scroll)
    shown = [list(d.proto.column_order) for d in at.dataframe if "unbiased / better" in d.value.columns]
    assert shown == [["group", "metric", "unbiased / better", f"run #{rid} old step 0 (before)",
                      f"run #{rid} old step 3 (after)"],
                     ["group", "metric", "unbiased / better", f"studio eval: {BASE}"]]


def test_metrics_in_order_with_their_unbiased_value_and_intervals(store):
    from engine.evaluation import metrics as M
    from engine.evaluation import uncertainty as U

    pairs = [M.PairScore("race" if i % 2 else "age", "stereo", -1.0, -2.0 if i < 24 else 0.0) for i in range(40)]
    table = M.crows_pairs_table(pairs, [str(i) for i in range(40)])
    record_evaluation(store, run_id=None, model=BASE, benchmark="crows_pairs", dataset_version="v", source="cli",
                      evaluated_model=BASE, metrics={**M.compute(table), **U.result_block(table, n_boot=200)})
    # BBQ as stored: its keys sort with "age/n_ambig" first alphabetically
    record_evaluation(store, run_id=None, model=BASE, benchmark="bbq", dataset_version="v", source="cli",
                      evaluated_model=BASE,
                      metrics={"age/n_ambig": 10.0, "age/acc_ambig": 0.4, "age/bias_ambig": 0.2, "acc_ambig": 0.5,
                               "acc_disambig": 0.8, "bias_ambig": 0.1, "bias_disambig": -0.05, "n_ambig": 20.0,
                               "seconds": 3.0, "ci": {"acc_ambig": [0.4, 0.6]}})
    at = open_page("views/compare.py")
    assert not at.exception, at.exception
    table = _before_after(at)
    col = f"studio eval: {BASE}"
    crows = table[table["benchmark"] == "CrowS-Pairs"]
    assert list(crows["metric"])[:2] == ["stereotype_score", "stereo_score"]  # no anti-stereotype pairs here
    assert list(crows["group"])[:2] == ["all", "all"] and list(crows["group"])[-1] == "race"
    assert not {"n", "n_stereo", "n_antistereo"} & set(crows["metric"])
    assert crows.iloc[0]["unbiased / better"] == "50 = unbiased"
    assert crows.iloc[0][col].startswith("60.0 [") and crows.iloc[0][col].endswith("]")  # 24 of 40, interval
    bbq = table[table["benchmark"] == "BBQ"]
    assert list(zip(bbq["group"], bbq["metric"])) == [
        ("all", "acc_ambig"), ("all", "acc_disambig"), ("all", "bias_ambig"), ("all", "bias_disambig"),
        ("age", "acc_ambig"), ("age", "bias_ambig")]  # counts and seconds left out
    assert list(bbq["unbiased / better"])[2:4] == ["0 = unbiased", "0 = unbiased"]
    assert bbq.iloc[0][col] == "0.500 [0.400, 0.600]"
    # benchmarks in a fixed order (bias benchmarks before BBQ), not alphabetically
    assert list(dict.fromkeys(table["benchmark"])) == ["CrowS-Pairs", "BBQ"]
