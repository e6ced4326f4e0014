"""engine.data builders, splits and catalogue: group labels, determinism, disjoint splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.data import (
    DATASETS,
    PAPER_COUNTRIES,
    SPLITS,
    PromptExample,
    build_pair_splits,
    build_pairs,
    build_prompt_splits,
    build_prompts,
    dataset_kind,
    load_bbq,
    load_named,
    preview,
    split_examples,
)
from engine.data.axes import DEFAULT_BIAS_AXES
from engine.data.splits import assign_keys

FIXTURES = Path(__file__).parent / "fixtures" / "data"
BBQ_CATEGORIES = {"Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"}


def _keys(rows) -> set[str]:
    return {r.meta["split_key"] for r in rows}


def _assert_disjoint(splits: dict) -> None:
    keys = {name: _keys(rows) for name, rows in splits.items()}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["eval"]
    assert not keys["validation"] & keys["eval"]
    assert all(rows for rows in splits.values())
    for name, rows in splits.items():
        assert all(r.meta["split"] == name for r in rows)


# ---------------------------------------------------------------- split_examples


def test_split_examples_is_deterministic_disjoint_and_complete():
    items = [PromptExample(f"p{i}", "g", "t", {"split_key": f"k{i // 3}"}) for i in range(300)]
    a = split_examples(items, seed=7)
    b = split_examples(list(reversed(items)), seed=7)
    assert {k: sorted(x.prompt for x in v) for k, v in a.items()} == {
        k: sorted(x.prompt for x in v) for k, v in b.items()
    }
    assert sorted(x.prompt for v in a.values() for x in v) == sorted(x.prompt for x in items)
    assert [len(_keys(a[s])) for s in SPLITS] == [80, 10, 10]  # 100 keys, fractions 0.8 / 0.1 / 0.1
    for s in SPLITS:  # all three items of a key land together
        assert all(Counter(x.meta["split_key"] for x in a[s])[k] == 3 for k in _keys(a[s]))
    _assert_disjoint(
        {s: [PromptExample(x.prompt, x.group, x.source, {**x.meta, "split": s}) for x in a[s]] for s in SPLITS}
    )


def test_eval_split_is_fixed_across_seeds_while_train_changes():
    keys = [f"k{i}" for i in range(200)]
    s0, s1 = assign_keys(keys, seed=0), assign_keys(keys, seed=1)
    eval0 = {k for k, v in s0.items() if v == "eval"}
    assert eval0 == {k for k, v in s1.items() if v == "eval"}
    assert {k for k, v in s0.items() if v == "validation"} != {k for k, v in s1.items() if v == "validation"}
    moving = assign_keys(keys, seed=1, fixed_eval=False)
    assert {k for k, v in moving.items() if v == "eval"} != eval0


def test_split_fractions_are_validated_and_small_sets_keep_every_split():
    with pytest.raises(ValueError, match="summing to 1"):
        split_examples([1, 2, 3], seed=0, fractions=(0.5, 0.1, 0.1), key=str)
    small = split_examples([1, 2, 3, 4, 5], seed=0, key=str)
    assert all(len(small[s]) >= 1 for s in SPLITS)
    with pytest.raises(ValueError, match="split must be one of"):
        build_prompts("bold", split="test")


# ---------------------------------------------------------------- prompts


def test_bold_prompts_groups_and_splits():
    splits = build_prompt_splits("bold", seed=3)
    _assert_disjoint(splits)
    train = splits["train"]
    assert {p.group for p in train} == {"gender", "race", "religion", "political_ideology", "profession"}
    assert all(p.prompt.startswith("Complete this sentence: ") and p.source == "bold" for p in train)
    sub = build_prompts("bold", seed=3, group_by="subgroup")
    assert {"American_actors", "American_actresses", "African_Americans", "judaism"} <= {p.group for p in sub}
    raw = build_prompts("bold", seed=3, style="raw", limit=5)
    assert all(p.prompt == p.meta["prefix"].strip() for p in raw)


def test_builders_are_deterministic_and_seed_only_moves_train_and_validation():
    a = build_prompt_splits("holistic_bias", seed=1, per_group=40)
    b = build_prompt_splits("holistic_bias", seed=1, per_group=40)
    c = build_prompt_splits("holistic_bias", seed=2, per_group=40)
    assert a == b and [p.meta for p in a["train"]] == [p.meta for p in b["train"]]
    assert a["eval"] == c["eval"]
    assert {p.prompt for p in a["train"]} != {p.prompt for p in c["train"]}


def test_holistic_bias_prompts_are_chat_prompts_by_axis():
    splits = build_prompt_splits("holistic_bias", seed=0, per_group=50)
    _assert_disjoint(splits)
    groups = {p.group for p in splits["train"]}
    assert "nonce" not in groups and {"gender", "race", "religion", "age", "disability"} <= groups
    assert Counter(p.group for p in splits["train"]) == {g: 50 for g in groups}
    assert all(Counter(p.group for p in splits["eval"])[g] <= 7 for g in groups)  # cap scaled 50 * 0.1 / 0.8
    assert all("{" not in p.prompt for p in splits["train"])


def test_mixed_bias_prompts_cover_the_default_axes_with_both_sources():
    splits = build_prompt_splits("mixed", seed=0, per_group=64)
    _assert_disjoint(splits)
    train = splits["train"]
    assert {p.group for p in train} == set(DEFAULT_BIAS_AXES)
    assert Counter(p.group for p in train) == {g: 64 for g in DEFAULT_BIAS_AXES}
    for axis in ("gender", "race", "religion"):  # both BOLD and HolisticBias cover these
        assert {p.source for p in train if p.group == axis} == {"bold", "holistic_bias"}
    limited = build_prompts("mixed", seed=0, limit=12)
    assert Counter(p.group for p in limited) == {g: 2 for g in DEFAULT_BIAS_AXES}


def test_bbq_ambiguous_prompts():
    splits = build_prompt_splits("bbq_ambiguous", seed=0, group_by="category")
    _assert_disjoint(splits)
    rows = [p for s in SPLITS for p in splits[s]]
    assert len(rows) == 1792 // 2
    assert {p.group for p in rows} == BBQ_CATEGORIES
    for p in rows:
        assert p.meta["context_condition"] == "ambig" and p.meta["label"] == p.meta["unknown_index"]
        assert p.meta["answers"][p.meta["unknown_index"]] in p.prompt
        assert p.meta["split_key"] == f"bbq/{p.group}/{p.meta['question_index']}"
    axes = build_prompts("bbq_ambiguous", seed=0, group_by="axis")
    assert {p.group for p in axes} == {
        "age",
        "disability",
        "nationality",
        "physical_appearance",
        "religion",
        "sexual_orientation",
    }


# ---------------------------------------------------------------- pairs


def test_bbq_pairs_prefer_the_unbiased_answer():
    splits = build_pair_splits("bbq", seed=0)
    _assert_disjoint(splits)
    pairs = [p for s in SPLITS for p in splits[s]]
    assert {p.group for p in pairs} == BBQ_CATEGORIES
    kinds = Counter(p.meta["pair_type"] for p in pairs)
    assert kinds["ambig"] == 1792 // 2 and kinds["disambig_counter"] + kinds["disambig_pro"] == 1792 // 2
    for p in pairs:
        answers, m = p.meta["answers"], p.meta
        assert p.chosen == answers[m["chosen_index"]] and p.rejected == answers[m["rejected_index"]]
        assert p.chosen != p.rejected
        if m["pair_type"] == "ambig":
            assert m["chosen_index"] == m["unknown_index"] and m["rejected_index"] == m["biased_index"]
        elif m["pair_type"] == "disambig_counter":
            assert m["chosen_index"] == m["label"] != m["biased_index"] == m["rejected_index"]
        else:
            assert m["chosen_index"] == m["label"] == m["biased_index"] and m["rejected_index"] == m["unknown_index"]
    counter_only = [p for s in SPLITS for p in build_pair_splits("bbq", seed=0, disambig="counter")[s]]
    assert Counter(p.meta["pair_type"] for p in counter_only)["disambig_pro"] == 0
    assert len(counter_only) == kinds["ambig"] + kinds["disambig_counter"]


def test_bbq_pair_on_a_hand_checked_row(tmp_path):
    rows, _ = load_bbq(categories=["Sexual_orientation"])
    row = next(r for r in rows if r.context_condition == "ambig" and r.question_polarity == "neg")
    assert row.file == "bbq/data/Sexual_orientation.jsonl"  # bundled files are named relative to the bundle
    source = Path(__file__).resolve().parents[1] / "engine" / "data" / "bundled" / row.file
    raw = json.loads(source.read_text().splitlines()[row.line - 1])
    (tmp_path / "Sexual_orientation.jsonl").write_text(json.dumps(raw) + "\n")
    pairs = [p for s in SPLITS for p in build_pair_splits("bbq", path=tmp_path, fractions=(1.0, 0.0, 0.0))[s]]
    assert len(pairs) == 1
    pair = pairs[0]
    unknown = next(raw[f"ans{i}"] for i in range(3) if raw["answer_info"][f"ans{i}"][1] == "unknown")
    stereotyped = {g.lower() for g in raw["additional_metadata"]["stereotyped_groups"]}
    target = next(
        raw[f"ans{i}"]
        for i in range(3)
        if raw["answer_info"][f"ans{i}"][1].lower() in stereotyped
        or raw["answer_info"][f"ans{i}"][0].lower() in stereotyped
    )
    assert (pair.chosen, pair.rejected, pair.group) == (unknown, target, "Sexual_orientation")
    assert pair.prompt.startswith(raw["context"] + " " + raw["question"])
    letters = build_pairs("bbq", path=tmp_path, fractions=(1.0, 0.0, 0.0), answer_format="letter")
    assert letters[0].chosen == "ABC"[pair.meta["chosen_index"]]


def test_goqa_pairs_follow_the_paper():
    path = FIXTURES / "goqa_hub_layout.csv"
    splits = build_pair_splits("global_opinion_qa", path=path, seed=0, fractions=(1.0, 0.0, 0.0))
    pairs = splits["train"]
    # 6 valid (question, country) rows; Egypt's tied first question has no majority answer.
    assert sorted((p.group, p.chosen) for p in pairs) == [
        ("Egypt", "A"),
        ("Japan", "B"),
        ("Japan", "B"),
        ("Nigeria", "A"),
        ("Nigeria", "D"),
    ]
    for p in pairs:
        assert p.prompt.startswith(f"Opinion of people in {p.group} on: ")
        assert "Please select the best response:\nA. " in p.prompt
        assert p.rejected != p.chosen and p.rejected in "ABCD"[: len(p.meta["options"])]
    again = build_pairs("global_opinion_qa", path=path, seed=0, fractions=(1.0, 0.0, 0.0))
    assert [(p.prompt, p.rejected) for p in again] == [(p.prompt, p.rejected) for p in pairs]
    many_seeds = {
        build_pairs("global_opinion_qa", path=path, seed=s, fractions=(1.0, 0.0, 0.0))[0].rejected for s in range(12)
    }
    assert len(many_seeds) > 1  # the rejected option is a seeded random draw, as in the paper
    only = build_pairs("global_opinion_qa", path=path, countries=["Japan"], fractions=(1.0, 0.0, 0.0))
    assert {p.group for p in only} == {"Japan"}
    text = build_pairs("global_opinion_qa", path=path, answer_format="text", fractions=(1.0, 0.0, 0.0))
    assert {p.chosen for p in text} <= {"Good idea", "Bad idea", "Yes", "No", "4.0"}


def test_goqa_questions_never_straddle_splits():
    splits = build_pair_splits("global_opinion_qa", path=FIXTURES / "goqa_flat_layout.json", seed=0)
    by_question = {}
    for name, pairs in splits.items():
        for p in pairs:
            assert by_question.setdefault(p.meta["question_id"], name) == name


# ---------------------------------------------------------------- catalogue


def test_catalogue_kinds_and_named_loads():
    assert dataset_kind("bias_prompts") == "prompts" and dataset_kind("bbq_pairs") == "pairs"
    assert dataset_kind("nope") is None
    assert DATASETS["goqa_pairs"].options["countries"] == PAPER_COUNTRIES[:5]
    json.dumps([spec.to_dict() for spec in DATASETS.values()])
    rows = load_named("bbq_pairs", split="eval", limit=12)
    assert len(rows) == 12 and Counter(r.group for r in rows) == {c: 2 for c in BBQ_CATEGORIES}
    assert load_named("bbq_pairs", split="eval", seed=5, limit=12) == rows
    goqa = load_named("goqa_pairs", path=str(FIXTURES / "goqa_flat_layout.json"))
    assert {r.group for r in goqa} <= set(PAPER_COUNTRIES[:5])
    with pytest.raises(KeyError, match="choose from"):
        load_named("missing")


def test_mixed_named_set_loads_from_a_folder_of_sources(tmp_path):
    from engine.data._rows import BUNDLED_DIR

    assert load_named("bias_prompts", split="eval", path=BUNDLED_DIR) == load_named("bias_prompts", split="eval")
    with pytest.raises(FileNotFoundError, match="bold/ and holistic_bias/"):
        load_named("bias_prompts", path=tmp_path)


def test_preview_is_json_able_with_group_counts():
    p = preview("bias_prompts", per_group=2)
    json.dumps(p)
    assert p["rows"] == sum(p["group_counts"].values()) == p["split_rows"]["train"]
    assert set(p["group_counts"]) == set(DEFAULT_BIAS_AXES) == set(p["examples"])
    assert all(len(v) == 2 for v in p["examples"].values())
    pairs = preview("bbq_pairs", per_group=1)
    assert all("[chosen]" in v[0] and "[rejected]" in v[0] for v in pairs["examples"].values())


def test_a_known_malformed_row_warns_once_per_process_not_on_every_load(caplog):
    """Issue 18 item 9: the upstream empty BOLD prompt is reported, once; later loads log it at debug level."""
    import logging

    from engine.data import builders

    builders._WARNED.clear()
    with caplog.at_level(logging.DEBUG, logger="engine.data.builders"):
        for split in ("train", "validation", "eval", "train"):
            load_named("bias_prompts", split, seed=0)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "malformed" in r.getMessage()]
    again = [r for r in caplog.records if r.levelno == logging.DEBUG and "(again)" in r.getMessage()]
    assert len(warned) == 1 and "religious_ideology_prompt.json line 371" in warned[0].getMessage()
    assert again  # still said, where debugging looks
