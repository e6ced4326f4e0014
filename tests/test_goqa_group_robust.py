"""The group-robust paper's real-data study shape: GlobalOpinionQA pairs with countries as groups (the bundled
sample), the held-out worst-group figures (max group loss, min group accuracy) with their intervals, and a short
GR-IPO run on the tiny model that records them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.runs_fixtures import evaluations, metrics_by_step, preference_config, run_in_process


# ---------------------------------------------------------------- the bundled dataset


def test_bundled_goqa_sample_loads_without_a_path():
    from engine.data._rows import BUNDLED_DIR
    from engine.data.global_opinion_qa import BUNDLED_FILE, PAPER_COUNTRIES, load_global_opinion_qa

    assert BUNDLED_FILE.is_relative_to(BUNDLED_DIR)  # inside the package: no ../shared needed
    rows, report = load_global_opinion_qa()
    assert report.ok and report.rows_ok == len(rows) == 1008
    assert Counter(r.country for r in rows) == {
        "Nigeria": 67, "Egypt": 73, "India (Current national sample)": 42, "China": 33, "Japan": 82,
        "Germany": 115, "France": 94, "Spain": 90, "United States": 103, "Canada": 73, "Brazil": 61,
        "Argentina": 78, "Australia": 70, "New Zealand": 27,
    }
    assert set(Counter(r.country for r in rows)) == set(PAPER_COUNTRIES)
    assert all(sum(r.distribution) > 0 and len(r.distribution) == len(r.options) for r in rows)


def test_goqa_pairs_groups_and_disjoint_held_out_split():
    from engine.data.global_opinion_qa import PAPER_COUNTRIES
    from engine.data.registry import load_named, load_named_splits

    splits = load_named_splits("goqa_pairs", seed=0)
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sizes == {"train": 211, "validation": 28, "eval": 56}  # 297 rows, 2 tied (no majority) give no pair
    for rows in splits.values():
        assert {p.group for p in rows} == set(PAPER_COUNTRIES[:5])  # countries as groups, the paper's first five
        for p in rows:
            assert p.prompt.startswith(f"Opinion of people in {p.group} on: ")
            assert p.chosen == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[p.meta["chosen_index"]] != p.rejected
            probs = p.meta["distribution"]
            assert probs[p.meta["chosen_index"]] == max(probs)  # the country's majority answer is preferred
    # split by question: no question, for any country, is both trained on and held out
    questions = {name: {p.meta["question_id"] for p in rows} for name, rows in splits.items()}
    assert not questions["train"] & questions["eval"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["eval"]
    assert not {p.prompt for p in splits["train"]} & {p.prompt for p in splits["eval"]}
    # the held-out split is the same for every seed (runs of different seeds are evaluated on the same pairs)
    assert load_named("goqa_pairs", "eval", seed=7) == splits["eval"]
    assert load_named("goqa_pairs", "train", seed=7) != splits["train"]


def _flat(country: str, question: str, options: list, distribution: list) -> dict:
    return {"country": country, "question": question, "options": options, "distribution": distribution}


def test_malformed_goqa_rows_are_reported_with_file_line_and_reason(tmp_path):
    from engine.data.builders import build_pair_splits
    from engine.data.registry import load_named_splits_with_report
    from engine.data.types import DataValidationError

    path = tmp_path / "goqa.jsonl"
    good = [_flat("Japan", f"Question {i}?", ["Yes", "No"], [0.7, 0.3]) for i in range(8)]
    lines = [json.dumps(r) for r in good]
    lines.insert(2, json.dumps(_flat("Egypt", "Bad?", ["Yes", "No"], [0.5, 0.2, 0.3])))
    lines.insert(5, json.dumps({"country": "Nigeria", "question": "No options?"}))
    lines.insert(7, "{not json")
    path.write_text("\n".join(lines) + "\n")

    splits, report = load_named_splits_with_report("goqa_pairs", path=str(path))
    assert sum(len(v) for v in splits.values()) == 8 and {p.group for v in splits.values() for p in v} == {"Japan"}
    assert [(line, reason) for _, line, reason in report.malformed] == [
        (3, "distribution for 'Egypt' has 3 shares but there are 2 options"),
        (6, "record has neither the hub columns ['question', 'selections', 'options'] nor the flattened ones "
            "['country', 'question', 'options', 'distribution']; keys: ['country', 'question']"),
        (8, "not valid JSON: Expecting property name enclosed in double quotes"),
    ]
    with pytest.raises(DataValidationError, match=r"goqa\.jsonl line 3: distribution for 'Egypt' has 3 shares"):
        build_pair_splits("global_opinion_qa", path=path, strict=True)


# ---------------------------------------------------------------- the worst-group figures


def test_group_extremes_by_hand():
    from engine.evaluation.group_metrics import GroupMetricError, group_extremes

    # a: losses 1, 3 (mean 2), correct 1, 0; b: losses 2, 2 (mean 2), both correct; c: one pair, loss 0.5, wrong
    losses = [1.0, 3.0, 2.0, 2.0, 0.5]
    correct = [True, False, True, True, False]
    groups = ["a", "a", "b", "b", "c"]
    out = group_extremes(losses, correct, groups, n_boot=4000, seed=1)
    assert (out["loss/a"], out["loss/b"], out["loss/c"]) == (2.0, 2.0, 0.5)
    assert (out["accuracy/a"], out["accuracy/b"], out["accuracy/c"]) == (0.5, 1.0, 0.0)
    assert (out["count/a"], out["count/b"], out["count/c"]) == (2, 2, 1)
    assert out["loss/max_group"] == 2.0 and out["worst_loss_group"] == "a"  # ties go to the first group
    assert out["accuracy/min_group"] == 0.0 and out["worst_accuracy_group"] == "c"
    ci = out["ci"]
    # resampling within groups: a's mean is 1, 2 or 3 (p = 1/4, 1/2, 1/4), b's is always 2, so the max over groups
    # is 2 (p = 3/4) or 3 (p = 1/4): the 95% interval is [2, 3]
    assert ci["loss/max_group"] == [2.0, 3.0]
    assert ci["loss/a"] == [1.0, 3.0] and ci["loss/b"] == [2.0, 2.0] and ci["accuracy/a"] == [0.0, 1.0]
    # c (one pair) is always wrong: the min accuracy is 0 in every resample; a single pair gets no own interval
    assert ci["accuracy/min_group"] == [0.0, 0.0]
    assert "loss/c" not in ci and "accuracy/c" not in ci
    assert out["bootstrap"]["n_boot"] == 4000 and out["bootstrap"]["level"] == 0.95
    assert group_extremes(losses, correct, groups, n_boot=4000, seed=1) == out  # seeded
    assert group_extremes(losses, correct, groups, n_boot=0)["ci"] == {}
    with pytest.raises(GroupMetricError, match="differ in length"):
        group_extremes(losses, correct[:-1], groups)
    with pytest.raises(GroupMetricError, match="not finite"):
        group_extremes([float("nan")] + losses[1:], correct, groups)
    with pytest.raises(GroupMetricError, match="no held-out pairs"):
        group_extremes([], [], [])


def test_group_extremes_interval_covers_the_worst_group_at_about_the_nominal_rate():
    """Simulated held-out sets: two groups with known accuracies 0.6 and 0.8 (min 0.6), 60 pairs each."""
    import numpy as np

    from engine.evaluation.group_metrics import group_extremes

    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    groups = ["x"] * 60 + ["y"] * 60
    for t in range(trials):
        correct = np.concatenate([rng.random(60) < 0.6, rng.random(60) < 0.8])
        lo, hi = group_extremes(np.zeros(120), correct, groups, n_boot=400, seed=t)["ci"]["accuracy/min_group"]
        covered += lo <= 0.6 <= hi
    assert 0.88 <= covered / trials <= 0.99


# ---------------------------------------------------------------- a short GR-IPO run


def test_two_step_gr_ipo_on_goqa_records_worst_group_figures(store, tiny_model_dir):
    from engine.data.global_opinion_qa import PAPER_COUNTRIES
    from engine.evaluation.group_metrics import MAX_GROUP_LOSS, MIN_GROUP_ACCURACY

    cfg = preference_config(str(tiny_model_dir), "gr_ipo", dataset="goqa_pairs", max_steps=2, batch_size=4,
                            max_length=160, micro_batch_size=8, eta=0.0005, eval_prompts=1000, eval_every=0)
    rid = run_in_process(store, cfg)
    evs = evaluations(store, rid)
    # pair metrics at step 0 (before training) and at the last step; no bias-reward generation for option letters
    assert [(b, s) for b, s, _ in evs] == [("heldout_preference", 0), ("heldout_preference", 2)]
    countries = set(PAPER_COUNTRIES[:5])
    for _, _, m in evs:
        assert sum(m[f"count/{g}"] for g in countries) == 56  # every held-out pair
        per_group_loss = [m[f"loss/{g}"] for g in countries]
        per_group_acc = [m[f"accuracy/{g}"] for g in countries]
        assert m[MAX_GROUP_LOSS] == pytest.approx(max(per_group_loss))
        assert m[MIN_GROUP_ACCURACY] == pytest.approx(min(per_group_acc))
        assert m["worst_loss_group"] in countries and m["worst_accuracy_group"] in countries
        for key in (MAX_GROUP_LOSS, MIN_GROUP_ACCURACY):
            lo, hi = m["ci"][key]
            assert lo <= hi and all(f"{key.split('/')[0]}/{g}" in m["ci"] for g in countries)
    before = evs[0][2]
    # before training the policy is the reference: every margin is 0 up to float noise (so step 0's accuracies are
    # coin tosses on that noise) and IPO's loss is (1/(2 beta))^2 for every pair
    assert before["margin/mean"] == pytest.approx(0.0, abs=1e-3)
    assert before[MAX_GROUP_LOSS] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-3)
    assert evs[1][2][MAX_GROUP_LOSS] != pytest.approx(before[MAX_GROUP_LOSS], rel=1e-6)  # training moved it
    m = metrics_by_step(store, rid)
    assert sorted(m) == [1, 2]  # no step-0 bias-reward point for this dataset
    weights = [m[2][f"weight/{g}"] for g in countries]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)


def test_figure_script_reads_the_stored_runs(store, db_url, tiny_model_dir, tmp_path):
    """bench/goqa_group_robust.py on an IPO and a GR-IPO run of the same seed and budget (one step each)."""
    from bench import goqa_group_robust as bench

    common = {"dataset": "goqa_pairs", "max_steps": 1, "batch_size": 4, "max_length": 160, "micro_batch_size": 8,
              "eval_prompts": 1000, "eval_every": 0}
    ipo = run_in_process(store, preference_config(str(tiny_model_dir), "ipo", **common))
    gr = run_in_process(store, preference_config(str(tiny_model_dir), "gr_ipo", eta=0.0005, **common))
    other = run_in_process(store, preference_config(str(tiny_model_dir), "ipo", **{**common, "seed": 3}))
    out = tmp_path / "fig"
    bench.main(["--db", db_url, "--out", str(out), "--no-png", str(ipo), str(gr)])
    results = json.loads((out / "results.json").read_text())
    rows = {r["algorithm"]: r for r in results["summary"]}
    stored = {rid: evaluations(store, rid) for rid in (ipo, gr)}
    for algo, rid in (("ipo", ipo), ("gr_ipo", gr)):
        first, last = stored[rid][0][2], stored[rid][-1][2]
        assert rows[algo]["max_group_loss_first"] == first["loss/max_group"]
        assert rows[algo]["min_group_accuracy_last"] == last["accuracy/min_group"]
        assert rows[algo]["min_group_accuracy_last_ci"] == last["ci"]["accuracy/min_group"]
        assert rows[algo]["heldout_pairs"] == 56
    # the GR run's group weights are drawn, the IPO run has none
    assert {r["algorithm"]: bool(r["weights"]) for r in results["runs"]} == {"ipo": False, "gr_ipo": True}
    html = (out / "figure.html").read_text()
    assert "Max group loss" in html and "GR-IPO group weights" in html
    assert f"| {gr} | gr_ipo | 1 |" in (out / "table.md").read_text()
    with pytest.raises(SystemExit, match="differ in \\['seed'\\]"):
        bench.main(["--db", db_url, "--out", str(out), "--no-png", str(ipo), str(other)])
