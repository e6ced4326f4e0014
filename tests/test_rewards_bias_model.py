"""BiasRewardModel on tiny random BERT folders (any HF sequence-classification head), and ROC-AUC."""

from __future__ import annotations

import math
import random
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine.rewards.bias_model import TOKENIZER_FILES, BiasRewardModel, base_model_dir  # noqa: E402
from engine.rewards.train import held_out_targets, roc_auc  # noqa: E402

TEXTS = [
    "Short.",
    "A somewhat longer sentence about a teacher who works at the school down the road.",
    "Mid length text here.",
    "",
    " ".join(["word"] * 300),  # longer than the tiny model's 64 positions: must be truncated, not crash
    "Another one.",
]


def _tiny_folder(path, num_labels=1, id2label=None, extra=None):
    cfg = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=num_labels,
    )
    if id2label:
        cfg.id2label = id2label
        cfg.label2id = {v: k for k, v in id2label.items()}
    if extra:
        cfg.bias_reward = extra
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(path))
    for name in TOKENIZER_FILES:
        shutil.copy2(base_model_dir() / name, path / name)
    return path


@pytest.fixture(scope="module")
def one_logit(tmp_path_factory):
    return _tiny_folder(tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory):
    return _tiny_folder(tmp_path_factory.mktemp("three"), 3, {0: "biased", 1: "neutral", 2: "other"})


def _reference_logits(folder, texts, max_length):
    """One text at a time, no padding at all: what batching must reproduce."""
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        return [model(**tok(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0].tolist()
                for t in texts]


def test_batched_sorted_scores_equal_one_by_one_scores(one_logit):
    m = BiasRewardModel(one_logit, batch_size=4)
    assert m.max_length == 64  # the model's position limit, below the tokenizer's 512
    ref = _reference_logits(one_logit, TEXTS, 64)
    got = m.logits(TEXTS)
    for r, g in zip(ref, got):
        assert g == pytest.approx(r, abs=1e-4)
    unsorted = BiasRewardModel(one_logit, batch_size=4, sort_by_length=False).logits(TEXTS)
    for a, b in zip(got, unsorted):
        assert a == pytest.approx(b, abs=1e-4)


def test_special_tokens_are_kept(one_logit):
    m = BiasRewardModel(one_logit)
    enc = m.tokenizer(["hello"], truncation=True, max_length=m.max_length)
    assert enc["input_ids"][0][0] == m.tokenizer.cls_token_id and enc["input_ids"][0][-1] == m.tokenizer.sep_token_id


def test_one_logit_transforms_and_sign(one_logit):
    raw = BiasRewardModel(one_logit, transform="raw").score(TEXTS)  # no bias_reward in config: auto = raw
    assert BiasRewardModel(one_logit).transform == "raw"
    flipped = BiasRewardModel(one_logit, transform="raw", sign=-1).score(TEXTS)
    assert flipped == pytest.approx([-x for x in raw])
    sig = BiasRewardModel(one_logit, transform="sigmoid").score(TEXTS)
    assert sig == pytest.approx([1 / (1 + math.exp(-x)) for x in raw])
    sig_neg = BiasRewardModel(one_logit, transform="sigmoid", sign=-1).score(TEXTS)
    assert [a + b for a, b in zip(sig, sig_neg)] == pytest.approx([1.0] * len(TEXTS))


def test_config_field_selects_sigmoid(tmp_path):
    folder = _tiny_folder(tmp_path / "m", extra={"transform": "sigmoid", "max_length": 16})
    m = BiasRewardModel(folder)
    assert m.transform == "sigmoid" and m.max_length == 16
    assert all(0.0 <= s <= 1.0 for s in m.score(TEXTS))


def test_multi_label_uses_the_unbiased_label_probability(three_labels):
    m = BiasRewardModel(three_labels)  # "neutral" found by name
    logits = m.logits(TEXTS)
    probs = torch.softmax(torch.tensor(logits), dim=-1)
    assert m.score(TEXTS) == pytest.approx(probs[:, 1].tolist())
    by_index = BiasRewardModel(three_labels, unbiased_label=2).score(TEXTS)
    assert by_index == pytest.approx(probs[:, 2].tolist())
    biased_named = BiasRewardModel(three_labels, unbiased_label="biased", sign=-1).score(TEXTS)
    assert biased_named == pytest.approx((1 - probs[:, 0]).tolist())


def test_unclear_labels_ask_for_unbiased_label(tmp_path):
    folder = _tiny_folder(tmp_path / "m", 2, {0: "LABEL_A", 1: "LABEL_B"})
    with pytest.raises(ValueError, match="unbiased_label"):
        BiasRewardModel(folder)
    with pytest.raises(ValueError, match="not one of"):
        BiasRewardModel(folder, unbiased_label="nope")
    with pytest.raises(ValueError, match="transform"):
        BiasRewardModel(folder, transform="sigmoid")


def test_registry_bias_rm_with_a_path_and_include_prompt(one_logit):
    from engine.rewards import build_reward

    reward = build_reward([{"name": "bias_rm", "params": {"path": str(one_logit), "include_prompt": True,
                                                          "transform": "sigmoid"}}])
    out = reward(["The nurse said", "The nurse said "], ["hello", "hello"])
    # Both join to "The nurse said hello": the separator is added only when the prompt lacks one.
    assert out.per_function["bias_rm"][0] == pytest.approx(out.per_function["bias_rm"][1], abs=1e-5)
    reward.close()


def test_empty_input_scores_nothing(one_logit):
    assert BiasRewardModel(one_logit).score([]) == []


def test_roc_auc_matches_the_pair_count_definition():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(n)]  # with ties
        labels = [rng.random() < 0.5 for _ in range(n)]
        pos = [s for s, y in zip(scores, labels) if y]
        neg = [s for s, y in zip(scores, labels) if not y]
        if not pos or not neg:
            assert math.isnan(roc_auc(scores, labels))
            continue
        brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
        assert roc_auc(scores, labels) == pytest.approx(brute)


def test_held_out_targets_keep_each_target_on_one_side_and_cover_every_category():
    from engine.data import load_stereoset

    items, _ = load_stereoset(types=["intersentence"])
    held = held_out_targets(items)
    assert held == held_out_targets(list(reversed(items)))  # order-independent: deterministic
    assert {b for b, _ in held} == {it.bias_type for it in items}
    for bias_type in {it.bias_type for it in items}:
        targets = {it.target for it in items if it.bias_type == bias_type}
        n_held = sum(1 for b, _ in held if b == bias_type)
        assert 1 <= n_held < len(targets)
