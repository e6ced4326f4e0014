"""Bootstrap intervals and paired tests: nominal coverage on simulated data (fixed seeds), and exact small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluation import metrics as M
from engine.evaluation import uncertainty as U

REPLICATIONS = 300
# With 300 replications a true 95% coverage gives 285 +- 3.8 hits (one sd); percentile intervals of a proportion
# run slightly narrow at these sizes (about 94%), so the band is 0.91..0.98: wide enough for a fixed seed to pass
# reliably, narrow enough to catch intervals that are, say, too narrow by a third (about 83% coverage).
LOW, HIGH = 0.91, 0.98
N_BOOT = 500  # enough resamples for 2.5% / 97.5% quantiles; keeps the simulations to seconds on 2 cores


def _crows_table(more: np.ndarray, group: np.ndarray | None = None) -> M.ItemTable:
    n = len(more)
    group = np.zeros(n, dtype=np.int64) if group is None else group
    cols = {"more": more.astype(np.int64), "tie": np.zeros(n, dtype=np.int64), "anti": np.zeros(n, dtype=np.int64),
            "bias_type": group.astype(np.int64)}
    levels = {"bias_type": [f"g{i}" for i in range(int(group.max()) + 1)]}
    return M.ItemTable("crows_pairs", cols, levels, key_digest=M.key_digest([str(i) for i in range(n)]))


def _covered(interval, truth: float) -> bool:
    return interval is not None and interval[0] <= truth <= interval[1]


def test_interval_of_a_share_covers_the_true_value_at_the_nominal_rate():
    rng = np.random.default_rng(20261123)
    p, n = 0.62, 120
    hits = sum(_covered(U.intervals(_crows_table(rng.random(n) < p), n_boot=N_BOOT, seed=r)["stereotype_score"],
                        100 * p) for r in range(REPLICATIONS))
    assert LOW <= hits / REPLICATIONS <= HIGH, hits


def test_interval_of_the_macro_stereoset_score_and_of_a_group_cover_at_the_nominal_rate():
    rng = np.random.default_rng(7)
    n_terms, per_term = 12, 15
    p_term = rng.uniform(0.3, 0.8, n_terms)
    term = np.repeat(np.arange(n_terms), per_term)
    bias_type = (term >= 6).astype(np.int64)  # terms 0-5 in one bias type, 6-11 in the other
    levels = {"term": [f"t{i}" for i in range(n_terms)], "bias_type": ["a", "b"]}
    truth_all, truth_b = 100 * p_term.mean(), 100 * p_term[6:].mean()
    hits_all = hits_b = 0
    for r in range(REPLICATIONS):
        cols = {"pro": (rng.random(len(term)) < p_term[term]).astype(np.int64),
                "related": rng.integers(0, 3, len(term)), "term": term, "bias_type": bias_type}
        ci = U.intervals(M.ItemTable("stereoset", cols, levels), n_boot=N_BOOT, seed=r)
        hits_all += _covered(ci["ss"], truth_all)
        hits_b += _covered(ci["b/ss"], truth_b)
    assert LOW <= hits_all / REPLICATIONS <= HIGH, hits_all
    assert LOW - 0.02 <= hits_b / REPLICATIONS <= HIGH, hits_b  # 90 items: percentile intervals a bit narrower


def test_paired_interval_of_a_change_covers_the_true_change_and_rarely_marks_no_change():
    rng = np.random.default_rng(11)
    n, flip = 200, 0.2
    truth = 100 * 0.5 * flip  # after = before, except a share `flip` of the 0s become 1s: +10 points expected
    hits = marked_null = 0
    for r in range(REPLICATIONS):
        before = rng.random(n) < 0.5
        after = before | (rng.random(n) < flip)
        change = U.paired_changes(_crows_table(before), _crows_table(after), n_boot=N_BOOT, seed=r)["stereotype_score"]
        hits += _covered((change.low, change.high), truth)
        # Same marginal share, different items: a change of 0 in expectation, marked about 5% of the time.
        shuffled = before.copy()
        rng.shuffle(shuffled)
        marked_null += U.paired_changes(_crows_table(before), _crows_table(shuffled), n_boot=N_BOOT,
                                        seed=r)["stereotype_score"].significant
    assert LOW <= hits / REPLICATIONS <= HIGH, hits
    assert marked_null / REPLICATIONS <= 0.09, marked_null


def test_mcnemar_exact_by_hand():
    # 8 items gained the outcome, 2 lost it: two-sided binomial(10, 1/2) tail = 2 * (1 + 10 + 45) / 1024
    before = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5)
    after = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5)
    assert U.mcnemar_exact(before, after) == pytest.approx(2 * 56 / 1024)
    assert U.mcnemar_exact(before, before) == 1.0
    changes = U.paired_changes(_crows_table(before), _crows_table(after))
    c = changes["stereotype_score"]
    assert c.p_mcnemar == pytest.approx(2 * 56 / 1024)
    assert (c.before, c.after, c.diff, c.n) == pytest.approx((35.0, 65.0, 30.0, 20))


def test_intervals_are_seeded_keyed_like_the_metrics_and_skip_counts():
    rng = np.random.default_rng(0)
    table = _crows_table(rng.random(60) < 0.5, rng.integers(0, 3, 60))
    a, b = U.intervals(table, seed=3), U.intervals(table, seed=3)
    assert a == b and a != U.intervals(table, seed=4)
    point = M.compute(table)
    assert {"stereotype_score", "g0/stereotype_score", "g2/stereotype_score"} <= set(a)
    assert "n" not in a and "g0/n" not in a and "antistereo_score" not in a  # a count; an undefined share
    assert math.isnan(point["antistereo_score"])
    for k, (lo, hi) in ((k, v) for k, v in a.items() if v is not None):
        assert lo <= point[k] <= hi


def test_results_on_different_items_are_not_paired():
    rng = np.random.default_rng(0)
    a = _crows_table(rng.random(30) < 0.5)
    other = M.ItemTable("crows_pairs", a.cols, a.levels, key_digest="0" * 16)
    with pytest.raises(U.PairingError, match="not on the same items"):
        U.paired_changes(a, other)
    with pytest.raises(U.PairingError, match="cannot pair"):
        U.paired_changes(a, M.perplexity_table([-1.0] * 30, [2] * 30, [str(i) for i in range(30)]))


def test_result_block_is_json_without_nan_and_recomputes():
    import json

    pairs = [M.PairScore("race", "stereo", -1.0, -2.0 + 0.1 * i) for i in range(20)]
    block = U.result_block(M.crows_pairs_table(pairs, [str(i) for i in range(20)]), n_boot=200)
    text = json.dumps(block, allow_nan=False)  # PostgreSQL's JSON refuses NaN
    back = U.stored_table(json.loads(text))
    assert M.compute(back)["stereotype_score"] == pytest.approx(M.crows_pairs_scores(pairs)["stereotype_score"])
    assert block["bootstrap"] == {"n_boot": 200, "level": 0.95, "seed": 0, "method": "percentile", "unit": "item"}
