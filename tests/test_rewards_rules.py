"""Rule rewards and the reward registry / weighted sum (no model, no torch)."""

from __future__ import annotations

import math

import pytest

from engine.rewards.base import REWARDS, CombinedReward, build_reward, check_params
from engine.rewards.rules import FormatReward, LengthReward, RefusalReward

ANSWER = ("Nurses can be any gender. Many men work as nurses, and what makes a good nurse is training, "
          "patience and care rather than who they are.")


def test_length_band_is_one_inside_and_decays_smoothly_outside():
    r = LengthReward(min_words=4, max_words=8, softness=0.5)
    assert r.score("one two three four") == 1.0
    assert r.score("one two three four five six seven eight") == 1.0
    # 2 words: z = (4 - 2) / (0.5 * 4) = 1 -> exp(-1/2)
    assert r.score("one two") == pytest.approx(math.exp(-0.5))
    # 12 words: z = (12 - 8) / (0.5 * 8) = 1
    assert r.score(" ".join(["w"] * 12)) == pytest.approx(math.exp(-0.5))
    too_short = [r.score(" ".join(["w"] * n)) for n in range(0, 5)]
    assert too_short == sorted(too_short) and too_short[0] < too_short[-1]
    too_long = [r.score(" ".join(["w"] * n)) for n in range(8, 30)]
    assert too_long == sorted(too_long, reverse=True)


def test_length_rejects_an_empty_band():
    with pytest.raises(ValueError, match="empty"):
        LengthReward(min_words=10, max_words=5)


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request.",
        "I cannot assist with generating stereotypes about any group.",
        "As an AI language model, I do not hold opinions about people.",
        "I apologize, but I won't write that.",
        "I must decline to answer this.",
        "I\u2019m not comfortable continuing this sentence.",
        "  It is not appropriate for me to make generalisations about religions.",
    ],
)
def test_refusal_boilerplate_scores_zero(text):
    assert RefusalReward().score(text) == 0.0


@pytest.mark.parametrize(
    "text",
    [
        ANSWER,
        "I can't say that all engineers are men; plenty of women are engineers.",
        "The chef was sorry that the restaurant closed, but she opened another one.",
        "",
    ],
)
def test_answers_are_not_refusals(text):
    assert RefusalReward().score(text) == 1.0


def test_refusal_after_a_real_answer_gets_partial_credit():
    text = ANSWER + " " + ANSWER + " I'm sorry, but I can't help with more than that."
    assert RefusalReward(window=100, partial=0.4).score(text) == 0.4


def test_refusal_extra_patterns_and_bad_regex():
    assert RefusalReward(extra_patterns=[r"\bno comment\b"]).score("No comment.") == 0.0
    with pytest.raises(ValueError, match="regular expression"):
        RefusalReward(extra_patterns=["(unclosed"])


def test_format_scores_prose_high_and_degenerate_output_low():
    f = FormatReward()
    assert f.score(ANSWER) == 1.0
    assert f.score("") == 0.0
    assert f.score("   \n ") == 0.0
    assert f.score("the the the the the the the the the the") == 0.0
    loop = "She is nice. " * 6
    assert f.repeated_fraction(loop) > 0.5 and f.score(loop) == 0.0
    assert f.score("!!!! ???? #### $$$$ 1234 5678") == 0.0
    half = "ok " + "!!" * 2  # alpha share 2/6 below 0.6: linear penalty 1/3 / 0.6
    assert f.score(half) == pytest.approx((2 / 6) / 0.6)


def test_format_repetition_is_hand_computable():
    # 6 words -> 4 trigrams: (a b c) (b c a) (c a b) (a b c) -> 3 distinct -> 1/4 repeated
    f = FormatReward(n=3, max_repeat=0.5)
    assert f.repeated_fraction("a b c a b c") == pytest.approx(0.25)
    assert f.score("a b c a b c") == pytest.approx(1 - 0.25 / 0.5)


def test_combined_reward_weights_each_term_and_logs_each_separately():
    reward = build_reward([
        {"name": "length", "weight": 0.5, "params": {"min_words": 2, "max_words": 50}},
        {"name": "refusal", "weight": 2.0},
        {"name": "format", "weight": 0.0},
    ])
    prompts = ["Tell me about nurses."] * 3
    completions = [ANSWER, "I'm sorry, but I can't help with that.", "ok ok ok ok ok ok"]
    out = reward(prompts, completions)
    assert reward.names == ["length", "refusal", "format"]
    assert set(out.per_function) == {"length", "refusal", "format"}
    for i in range(3):
        expected = sum(w * out.per_function[k][i] for k, w in reward.weights.items())
        assert out.total[i] == pytest.approx(expected)
    assert out.per_function["refusal"] == [1.0, 0.0, 1.0]
    assert out.per_function["format"][2] == 0.0  # still logged with weight 0
    assert set(out.seconds) == set(out.per_function)


class _Const:
    name = "const"

    def __init__(self, values):
        self.values, self.closed = values, False

    def __call__(self, prompts, completions):
        return list(self.values)

    def close(self):
        self.closed = True


def test_nan_marks_an_unscorable_completion_in_the_total():
    term = _Const([0.5, math.nan])
    combined = CombinedReward([("a", 1.0, term), ("b", 0.0, _Const([1.0, 1.0]))])
    out = combined(["p", "p"], ["x", "y"])
    assert out.total[0] == 0.5 and math.isnan(out.total[1])
    combined.close()
    assert term.closed


def test_a_term_that_returns_the_wrong_count_is_an_error():
    with pytest.raises(RuntimeError, match="returned 1 scores for 2"):
        CombinedReward([("a", 1.0, _Const([0.1]))])(["p", "q"], ["x", "y"])


def test_duplicate_names_get_distinct_keys_and_specs_can_be_objects():
    class Spec:
        def __init__(self, name, weight=1.0, params=None):
            self.name, self.weight, self.params = name, weight, params or {}

    r = build_reward([Spec("length"), Spec("length", 2.0, {"min_words": 1})])
    assert r.names == ["length", "length#2"]


def test_config_reward_spec_is_accepted():
    from engine.config import RewardSpec

    r = build_reward([RewardSpec(name="format", weight=1.5)])
    assert r(["p"], [ANSWER]).total == [1.5]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "nope"}, "unknown reward 'nope'"),
        ({"name": "length", "params": {"min_word": 3}}, "no parameter"),
        ({"name": "length", "weight": float("inf")}, "finite"),
        ({"weight": 1.0}, "no 'name'"),
        ({"name": "length", "wieght": 1.0}, "unknown keys"),
    ],
)
def test_bad_specs_say_what_to_change(spec, message):
    with pytest.raises(ValueError, match=message):
        build_reward([spec])


def test_registry_lists_the_documented_rewards_and_their_parameters():
    assert set(REWARDS) == {"bias_rm", "relevance", "length", "refusal", "format"}
    assert REWARDS["relevance"].takes_device and "path" in REWARDS["relevance"].parameters()
    assert REWARDS["bias_rm"].parameters()["sign"] == 1.0
    assert "device" not in REWARDS["bias_rm"].parameters()
    check_params("bias_rm", {"path": "x", "include_prompt": True})  # validating does not load a model
    with pytest.raises(ValueError, match="batch_sz"):
        check_params("bias_rm", {"batch_sz": 3})


def test_empty_spec_list_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        build_reward([])
