"""`studio reward check`: the direction suite's shape and disjointness, hand-computed metrics on a fake reward,
and the command end to end on a tiny random reward-model folder."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from engine.rewards.check import (
    CARD_END,
    CARD_START,
    CheckInputs,
    bbq_cases,
    check_reward,
    load_neutral,
    load_suite,
    stereoset_rows,
    update_card,
)
from engine.rewards.suite.build_suite import (
    AXES,
    KINDS,
    build_items,
    build_neutral,
    disjointness_problems,
    group_forms,
    training_texts,
)
from tests.helpers import run_cli

FIELDS = ("id", "kind", "group", "swapped_from", "prompt", "better", "worse")


@pytest.fixture(scope="module")
def suite():
    return load_suite()


@pytest.fixture(scope="module")
def train_texts():
    return training_texts()


def test_suite_has_300_items_of_every_kind_and_axis(suite):
    assert len(suite) >= 300
    assert all(all(f in item for f in FIELDS) for item in suite)
    assert len({i["id"] for i in suite}) == len(suite)
    kinds = Counter(i["kind"] for i in suite)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 60, kinds
    assert {i["axis"] for i in suite} == set(AXES)
    assert {i["subkind"] for i in suite if i["kind"] == "evasion_vs_fair"} == {"off_topic", "empty", "refusal"}
    assert all(i["prompt"].strip() and i["better"].strip() for i in suite)
    assert all(i["worse"].strip() or i["subkind"] == "empty" for i in suite)


def test_every_item_has_a_group_swapped_twin(suite):
    by_id = {i["id"]: i for i in suite}
    twins_of = Counter(i["swapped_from"] for i in suite if i["swapped_from"] is not None)
    for item in suite:
        if item["swapped_from"] is None:
            assert twins_of[item["id"]] == 1, f"{item['id']} has {twins_of[item['id']]} twins"
        else:
            base = by_id[item["swapped_from"]]
            assert base["swapped_from"] is None
            assert (base["kind"], base["axis"]) == (item["kind"], item["axis"])
            assert base["group"] != item["group"]
            assert base["prompt"] != item["prompt"], "a twin must name the other group"


def test_suite_files_are_exactly_what_the_generator_writes(suite):
    assert build_items() == suite, "run `python -m engine.rewards.suite.build_suite` after editing the patterns"
    assert build_neutral() == load_neutral()


def test_suite_is_disjoint_from_the_training_text(suite, train_texts):
    assert len(train_texts) > 100_000  # StereoSet, HolisticBias and BOLD are all in
    assert disjointness_problems(suite, load_neutral(), train_texts) == []


def test_disjointness_check_catches_overlaps(suite, train_texts):
    from engine.data import load_stereoset

    leaked = load_stereoset(types=["intersentence"])[0][0]
    bad = {**suite[0], "id": "leak", "better": leaked.anti_stereotype}
    problems = disjointness_problems([bad], [], train_texts)
    assert any("leak.better is a training sentence" in p for p in problems)
    # the group terms are real words the check looks for, not spellings that could never match
    assert {"stepmothers", "Quakers", "people with epilepsy", "Kenyans"} <= group_forms()


def test_bbq_cases_come_from_the_eval_split_only():
    from engine.data import load_bbq, split_examples

    cases, _ = bbq_cases()
    parts = split_examples(load_bbq()[0], seed=0, key=lambda r: r.split_key)
    eval_keys = {r.split_key for r in parts["eval"]}
    other_keys = {r.split_key for r in parts["train"] + parts["validation"]}
    assert cases and {c["split_key"] for c in cases} <= eval_keys
    assert not {c["split_key"] for c in cases} & other_keys
    assert {c["kind"] for c in cases} == {"bbq_ambiguous", "bbq_disambiguated"}
    assert all(c["better"] != c["worse"] for c in cases)


def test_stereoset_rows_are_the_trainers_held_out_targets():
    from engine.data import load_stereoset
    from engine.rewards.train import held_out_targets

    items, _ = load_stereoset(types=["intersentence"])
    rows = stereoset_rows()
    assert {(r["bias_type"], r["target"]) for r in rows} == held_out_targets(items)
    per_item = Counter(r["item"] for r in rows)
    assert set(per_item.values()) == {3}


# ----------------------------------------------------------------------------------------- hand-computed


def _hand_inputs() -> CheckInputs:
    def item(id_, kind, prompt, better, worse, swapped_from=None, subkind=None):
        return {"id": id_, "kind": kind, "group": "g", "swapped_from": swapped_from, "prompt": prompt,
                "better": better, "worse": worse, "axis": "gender", "subkind": subkind}

    def ss(item_, kind, sentence):
        return {"item": item_, "bias_type": "race", "target": "t", "kind": kind, "context": "Ctx one.",
                "sentence": sentence}

    return CheckInputs(
        suite=[
            item("s1", "stereotype_vs_fair", "P1", "a b c", "a b"),  # 3 > 2: counts
            item("s2", "stereotype_vs_fair", "P2", "a", "a b", swapped_from="s1"),  # 1 < 2: does not
            item("s3", "counter_stereotype_vs_individuated", "P3", "x y", "x y"),  # tie: does not
            item("s4", "evasion_vs_fair", "P4", "z", "", subkind="empty"),  # 1 > 0
            item("s5", "neutral_vs_stereotype", "P5", "q q q", "q"),  # 3 > 1
        ],
        bbq=[
            {"id": "b1", "kind": "bbq_ambiguous", "prompt": "C1 Q1?", "better": "Unknown thing", "worse": "The man"},
            {"id": "b2", "kind": "bbq_disambiguated", "prompt": "C2 Q2?", "better": "The tall woman",
             "worse": "The man"},
        ],
        stereoset=[ss(0, "stereotype", "s"), ss(0, "anti-stereotype", "a a"), ss(0, "unrelated", "u u u"),
                   ss(1, "stereotype", "s s s s"), ss(1, "anti-stereotype", "a"), ss(1, "unrelated", "u u")],
        neutral=[{"id": "n1", "group": "g", "prompt": "N1", "completion": "n n n"},
                 {"id": "n2", "group": "g", "prompt": "N2", "completion": "n n"}],
    )


class WordCount:
    """A deterministic fake reward: the completion's word count. Records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [float(len(c.split())) for c in completions]


def test_check_reward_gives_the_hand_computed_numbers():
    fake = WordCount()
    out = check_reward(fake, inputs=_hand_inputs(), n_resamples=200)
    rows = {r["name"]: r for r in out["rows"]}
    expected = {
        "stereotype_vs_fair": (2, 0.5), "counter_stereotype_vs_individuated": (1, 0.0), "evasion_vs_fair": (1, 1.0),
        "neutral_vs_stereotype": (1, 1.0), "suite overall": (5, 0.6),
        "bbq_ambiguous": (1, 0.0), "bbq_disambiguated": (1, 1.0), "bbq overall": (2, 0.5),
        # word counts as trained ("Ctx one." + sentence): positives 4, 5, 3, 4 vs stereotypes 3, 6;
        # of 8 pairs 3 are won and 1 tied: 3.5 / 8. With the context as the prompt: 2, 3, 1, 2 vs 1, 4, the same.
        "stereoset held-out AUC (as trained)": (2, 0.4375),
        "stereoset held-out AUC (context as prompt)": (2, 0.4375),
        # the suite's worse completions score 2, 2, 2, 0, 1: median 2; only "n n n" is above it
        "neutral above median worse": (2, 0.5),
    }
    assert {name: (r["n"], pytest.approx(r["value"])) for name, r in rows.items()} == expected
    assert rows["neutral above median worse"]["threshold"] == 2.0
    assert rows["suite overall"]["pass"] is False and rows["evasion_vs_fair"]["pass"] is True
    assert rows["evasion_vs_fair"]["ci95"] == [1.0, 1.0]
    lo, hi = rows["stereotype_vs_fair"]["ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert out["failures"] == ["s2", "s3"] and out["twin_agreement"] == 0.0
    assert out["breakdown"]["evasion/empty"] == {"n": 1, "accuracy": 1.0}
    # One call, prompts and completions passed separately (never pre-joined).
    (prompts, completions), = fake.calls
    pairs = set(zip(prompts, completions))
    assert ("P1", "a b c") in pairs and ("P4", "") in pairs and ("Ctx one.", "s") in pairs
    assert ("", "Ctx one. s") in pairs  # the as-trained StereoSet text, which has no prompt
    assert len(pairs) == len(prompts)
    # Seeded: the same call gives the same intervals.
    again = check_reward(WordCount(), inputs=_hand_inputs(), n_resamples=200)
    assert [r["ci95"] for r in again["rows"]] == [r["ci95"] for r in out["rows"]]


def test_check_reward_builds_reward_specs():
    from engine.rewards.rules import LengthReward

    specs = [{"name": "length", "weight": 1.0, "params": {"min_words": 2, "max_words": 3}}]
    built = check_reward(specs, inputs=_hand_inputs(), n_resamples=50)["rows"]
    direct = check_reward(LengthReward(min_words=2, max_words=3), inputs=_hand_inputs(), n_resamples=50)["rows"]
    assert built == direct


def test_update_card_appends_once_then_replaces(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# Model\n\nIntro.\n")
    update_card(card, f"{CARD_START}\none\n{CARD_END}")
    card.write_text(card.read_text() + "\n## After\nkept\n")
    update_card(card, f"{CARD_START}\ntwo\n{CARD_END}")
    text = card.read_text()
    assert text.count(CARD_START) == 1 and "two" in text and "one" not in text
    assert text.startswith("# Model\n\nIntro.\n") and text.rstrip().endswith("kept")


# ------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_reward_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.rewards.bias_model import TOKENIZER_FILES, base_model_dir

    folder = tmp_path_factory.mktemp("tiny_rm")
    # Two labels named like the studio model's heads, so a default reward that reads a second head of the
    # model (an on-topic score) finds one; the bias reward reads "unbiased".
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, num_labels=2,
                                  id2label={0: "unbiased", 1: "on_topic"}, label2id={"unbiased": 0, "on_topic": 1},
                                  problem_type="multi_label_classification")
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(folder))
    for name in TOKENIZER_FILES:
        shutil.copy2(base_model_dir() / name, folder / name)
    (folder / "README.md").write_text("# tiny reward model\n")
    return folder


def test_studio_reward_check_writes_json_and_card(tiny_reward_folder, studio_home, tmp_path):
    out = run_cli("reward", "check", str(tiny_reward_folder), "--limit", "4", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Reward model alone" in out.stdout and "Default GRPO reward" in out.stdout
    report = json.loads((tiny_reward_folder / "validation.json").read_text())
    assert report["limit"] == 4 and report["shipped"] is False
    assert set(report["results"]) == {"reward_model", "default_grpo"}
    for res in report["results"].values():
        parts = {r["part"] for r in res["rows"]}
        assert parts == {"a", "b", "c", "d"}
        assert all(r["n"] > 0 for r in res["rows"])
        assert any(s["name"] == "bias_rm" and s["params"]["path"] == str(tiny_reward_folder) for s in res["specs"])
        assert all(s["params"].get("path", str(tiny_reward_folder)) == str(tiny_reward_folder) for s in res["specs"])
    card = (tiny_reward_folder / "README.md").read_text()
    assert card.startswith("# tiny reward model") and "## Validation" in card and "partial: --limit 4" in card
    # A rerun with --out writes the JSON there and replaces the card's section instead of adding one.
    elsewhere = tmp_path / "v.json"
    out = run_cli("reward", "check", str(tiny_reward_folder), "--limit", "2", "--out", str(elsewhere), timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(elsewhere.read_text())["limit"] == 2
    card = (tiny_reward_folder / "README.md").read_text()
    assert card.count("## Validation") == 1 and "partial: --limit 2" in card


def test_studio_reward_check_refuses_a_folder_without_a_model(tmp_path, studio_home):
    out = run_cli("reward", "check", str(tmp_path))
    assert out.returncode == 2 and "no config.json" in out.stderr and "Traceback" not in out.stderr
