"""The metric contract (db/metric_keys.py): every key and group field the app reads is one some runner promises,
and every runner writes what it promises, checked by running each algorithm for a step on the tiny model (or the
synthetic experiment) and reading the store, down to the Runs table's "Reward" and "Worst group" columns."""

from __future__ import annotations

import fnmatch

import pytest

from db import metric_keys as mk
from tests.runs_fixtures import grpo_config, metrics_by_step, preference_config, run_in_process

PREFERENCE = ("dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo")


def _promised_keys() -> set[str]:
    return {k for keys in (*mk.STEP_KEYS.values(), *mk.HELDOUT_KEYS.values()) for k in keys}


def test_every_key_the_app_reads_is_promised_by_some_runner():
    from app.charts import PANELS
    from app.live import CHART_GROUP_FIELDS
    from db.reads import GROUP_FIELDS, REWARD_KEYS, WORST_GROUP_KEYS

    promised = _promised_keys()
    read = {*REWARD_KEYS, *WORST_GROUP_KEYS, *mk.WORST_VS_AVERAGE_KEYS, *mk.WORST_VS_AVERAGE_ALSO}
    # the panels' exact names; a pattern with wildcards must match at least one promised (or templated) key
    templated = {mk.reward_term("length"), mk.phase_time("step"), mk.group_reward("g"), mk.group_weight("g")}
    for panel in PANELS:
        for p in (*panel.patterns, *panel.also):
            if any(c in p for c in "*?["):
                assert any(fnmatch.fnmatchcase(k, p) for k in promised | templated), (panel.title, p)
            else:
                read.add(p)
    missing = read - promised
    assert not missing, f"the app reads keys no runner promises in db/metric_keys.py: {sorted(missing)}"
    fields = {f for fs in mk.GROUP_FIELDS_WRITTEN.values() for f in fs}
    assert set(CHART_GROUP_FIELDS) <= fields and set(GROUP_FIELDS) == set(mk.GROUP_FIELDS)


def _group_rows(store, run_id: int) -> dict[int, dict[str, dict]]:
    from sqlalchemy import select

    from db.models import GroupStat

    out: dict[int, dict[str, dict]] = {}
    with store.read() as s:
        for g in s.scalars(select(GroupStat).where(GroupStat.run_id == run_id)):
            out.setdefault(g.step, {})[g.group] = {f: getattr(g, f) for f in mk.GROUP_FIELDS}
    return out


def _check_store(store, rid: int, algorithm: str, eval_steps: set[int]) -> None:
    from db.reads import runs_overview

    metrics = metrics_by_step(store, rid)
    train_steps = [s for s in metrics if s >= 1]
    assert train_steps, algorithm
    for step in train_steps:
        missing = set(mk.STEP_KEYS[algorithm]) - {k for k, v in metrics[step].items() if v is not None}
        assert not missing, (algorithm, step, missing)
    for step in eval_steps:
        missing = set(mk.HELDOUT_KEYS.get(algorithm, ())) - {k for k, v in metrics[step].items() if v is not None}
        assert not missing, (algorithm, step, missing)
    if algorithm in mk.GROUP_FIELDS_WRITTEN:
        rows = _group_rows(store, rid)
        for step in train_steps:
            for group, row in rows[step].items():
                if row["count"] == 0:  # a group-robust run's absent groups carry their weight only
                    continue
                got = {f for f in mk.GROUP_FIELDS_WRITTEN[algorithm] if row[f] is not None}
                assert got == set(mk.GROUP_FIELDS_WRITTEN[algorithm]), (algorithm, step, group, row)
    row = next(r for r in runs_overview(store) if r.id == rid)
    if algorithm != "compare":
        assert row.worst_group is not None and row.worst_group_key in mk.WORST_GROUP_KEYS, (algorithm, row)
    if algorithm in ("grpo", "gr_grpo", "compare"):
        assert row.reward is not None and row.reward_key in mk.REWARD_KEYS, (algorithm, row)


@pytest.mark.parametrize("algorithm", ["grpo", "gr_grpo"])
def test_grpo_runs_write_the_contract(store, tiny_model_dir, algorithm):
    extra = {"eta": 0.5} if algorithm == "gr_grpo" else {}
    rid = run_in_process(store, grpo_config(str(tiny_model_dir), algorithm=algorithm, max_steps=1, **extra))
    _check_store(store, rid, algorithm, eval_steps={0, 1})


def test_preference_runs_write_the_contract(store, tiny_model_dir):
    for algorithm in PREFERENCE:
        extra = {"eta": 0.05} if algorithm.startswith("gr_") else {}
        rid = run_in_process(store, preference_config(str(tiny_model_dir), algorithm, max_steps=1, **extra))
        _check_store(store, rid, algorithm, eval_steps=set())


def test_synthetic_and_compare_runs_write_the_contract(store, tiny_model_dir):
    rid = run_in_process(store, {"algorithm": "synthetic", "max_steps": 3})
    _check_store(store, rid, "synthetic", eval_steps=set())
    rid = run_in_process(store, {"algorithm": "compare", "model_a": str(tiny_model_dir),
                                 "model_b": str(tiny_model_dir), "num_prompts": 2, "max_new_tokens": 4,
                                 "reward": "length"})
    _check_store(store, rid, "compare", eval_steps=set())
