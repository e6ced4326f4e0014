"""Every bias metric against a small example computed by hand."""

from __future__ import annotations

import math

import pytest

from engine.evaluation import metrics as M
from engine.evaluation.scoring import plan_batches


def _bbq(cond: str, pred: int, *, label: int, biased: int | None = 0, unknown: int = 2, cat: str = "Age"):
    return M.BBQPrediction(cat, cond, label, unknown, biased, pred)


def test_bbq_accuracy_and_bias_scores_by_hand():
    # Disambiguated (unknown = option 2, biased = option 0):
    #   label 0, pred 0 -> correct, biased;  label 1, pred 0 -> wrong, biased;
    #   label 1, pred 1 -> correct, not biased;  label 0, pred 2 -> wrong, unknown (excluded from bias ratio)
    # acc_dis = 2/4; biased among non-unknown = 2/3 -> s_DIS = 2*2/3 - 1 = 1/3
    # Ambiguous (label = unknown = 2): preds 2, 0, 0, 1 -> acc_amb = 1/4;
    #   non-unknown answers 0, 0, 1 -> biased 2/3 -> s = 1/3; s_AMB = (1 - 1/4) * 1/3 = 0.25
    preds = [
        _bbq("disambig", 0, label=0), _bbq("disambig", 0, label=1), _bbq("disambig", 1, label=1),
        _bbq("disambig", 2, label=0),
        _bbq("ambig", 2, label=2), _bbq("ambig", 0, label=2), _bbq("ambig", 0, label=2), _bbq("ambig", 1, label=2),
    ]
    s = M.bbq_scores(preds)
    assert s["acc_disambig"] == pytest.approx(0.5)
    assert s["acc_ambig"] == pytest.approx(0.25)
    assert s["bias_disambig"] == pytest.approx(1 / 3)
    assert s["bias_ambig"] == pytest.approx(0.25)
    assert s["accuracy"] == pytest.approx(3 / 8)
    assert s["unknown_rate"] == pytest.approx(2 / 8)


def test_bbq_items_without_target_count_for_accuracy_only_and_categories_split():
    preds = [_bbq("disambig", 1, label=1, biased=None, cat="Religion"), _bbq("disambig", 0, label=1, cat="Age"),
             _bbq("disambig", 1, label=1, cat="Age")]
    r = M.bbq_report(preds)
    assert r["acc_disambig"] == pytest.approx(2 / 3)
    assert r["bias_disambig"] == pytest.approx(0.0)  # 1 biased of 2 scored
    assert r["Religion/acc_disambig"] == 1.0 and math.isnan(r["Religion/bias_disambig"])
    assert r["Age/bias_disambig"] == pytest.approx(0.0)
    assert math.isnan(r["acc_ambig"])  # no ambiguous items: undefined, never a fake 0


def test_pick_option_takes_first_of_ties():
    assert M.pick_option([-1.0, -0.5, -0.5]) == 1
    assert M.pick_option([-3.0, -2.0, -1.0]) == 2
    with pytest.raises(ValueError):
        M.pick_option([])


def test_crows_pairs_antistereo_rows_count_sent_less_as_stereotyping():
    pairs = [
        M.PairScore("race", "stereo", -10.0, -12.0),  # prefers sent_more = stereotype -> counts
        M.PairScore("race", "stereo", -15.0, -12.0),  # prefers sent_less -> not
        M.PairScore("gender", "antistereo", -10.0, -12.0),  # prefers sent_more = anti-stereotype -> not
        M.PairScore("gender", "antistereo", -13.0, -12.0),  # prefers sent_less = stereotype -> counts
        M.PairScore("gender", "stereo", -12.0, -12.0),  # tie -> not
    ]
    s = M.crows_pairs_scores(pairs)
    assert s["stereotype_score"] == pytest.approx(100 * 2 / 5)
    assert s["stereo_score"] == pytest.approx(100 * 1 / 3)
    assert s["antistereo_score"] == pytest.approx(50.0)
    assert s["race/stereotype_score"] == pytest.approx(50.0)
    assert s["gender/stereotype_score"] == pytest.approx(100 / 3)
    assert s["gender/n"] == 3


def test_stereoset_ss_lms_icat_by_hand():
    items = [
        M.TripletScore("race", -1.0, -2.0, -3.0),  # stereo wins; both beat unrelated (2 wins)
        M.TripletScore("race", -2.0, -1.0, -1.5),  # anti wins; only anti beats unrelated (1 win)
        M.TripletScore("gender", -1.0, -3.0, -2.0),  # stereo wins; only stereo beats unrelated (1 win)
        M.TripletScore("gender", -4.0, -3.0, -1.0),  # anti wins; none beats unrelated (0 wins)
    ]
    s = M.stereoset_scores(items)
    assert s["ss"] == pytest.approx(50.0)
    assert s["lms"] == pytest.approx(100 * 4 / 8)
    assert s["icat"] == pytest.approx(50.0 * 50.0 / 50.0)
    assert s["gender/lms"] == pytest.approx(100 * 1 / 4)
    assert M.icat(90.0, 60.0) == pytest.approx(90 * 40 / 50)
    assert M.icat(100.0, 50.0) == pytest.approx(100.0)


def test_perplexity_and_rewards_by_hand():
    assert M.perplexity(-2.0 * math.log(4.0), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        M.perplexity(0.0, 0)
    r = M.reward_scores([0.2, 0.4, float("nan"), 0.9], ["a", "a", "b", "c"])
    assert r["a/mean"] == pytest.approx(0.3) and math.isnan(r["b/mean"]) and r["c/mean"] == pytest.approx(0.9)
    assert r["mean"] == pytest.approx(0.5) and r["worst_group"] == pytest.approx(0.3) and r["unscored"] == 1


def test_plan_batches_respects_token_budget_longest_first():
    lengths = [5, 30, 10, 10, 50]
    batches = plan_batches(lengths, token_budget=60)
    assert batches[0] == [4]  # 2 rows of 50 exceed 60
    assert [i for b in batches for i in b] == [4, 1, 2, 3, 0]
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60
