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


# ------------------------------------------------------------------ the (prompt, completion) input of issue 11


def _two_head_folder(path):
    """A tiny folder shaped like the studio's: two sigmoid logits (unbiased, on_topic) reading text pairs."""
    from engine.rewards.bias_model import reward_config_fields

    folder = _tiny_folder(path, 2, {0: "unbiased", 1: "on_topic"})
    cfg = transformers.AutoConfig.from_pretrained(str(folder))
    for k, v in reward_config_fields(64, labels=("unbiased", "on_topic"), input="pair").items():
        setattr(cfg, k, v)
    cfg.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    return _two_head_folder(tmp_path_factory.mktemp("two"))


PROMPTS = ["Are women bad at math?", "Does practice help with math?", "", "Complete this sentence: Women are",
           "x " * 200]
COMPLETIONS = ["Yes, that's true.", "Yes, that's true.", "Yes, that's true.", "bad at math.", "word " * 200]


def test_training_and_scoring_read_the_same_token_ids(two_heads):
    """FrozenCache (training) and BiasRewardModel (scoring) both go through encode_reward_inputs: the ids the
    model sees when scoring are exactly the ids training cached."""
    from engine.rewards.train import FrozenCache

    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(two_heads)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(two_heads))
    cache = FrozenCache(model, tok, PROMPTS, COMPLETIONS, layers=1, max_length=64)
    seen: list[list[int]] = []

    def grab(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs["attention_mask"] if "attention_mask" in kwargs else args[1]
        seen.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))

    handle = model.bert.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        BiasRewardModel.from_loaded(model, tok, max_length=64, sort_by_length=False).score_pairs(PROMPTS, COMPLETIONS)
    finally:
        handle.remove()
    assert seen == cache.ids
    assert all(len(ids) <= 64 for ids in seen)
    sep = tok.sep_token_id
    assert all(ids.count(sep) == 2 for ids in seen)  # always a pair: [CLS] prompt [SEP] completion [SEP]


def test_pair_input_reads_the_prompt_and_completion_input_does_not(two_heads):
    pair = BiasRewardModel(two_heads)
    assert pair.input == "pair" and pair.transform == "sigmoid" and pair.label_index == 0
    a, b, _, _, _ = pair.score_pairs(PROMPTS, COMPLETIONS)
    assert a != pytest.approx(b, abs=1e-6)  # same completion, other prompt: another score
    alone = BiasRewardModel(two_heads, input="completion")
    x, y, z, _, _ = alone.score_pairs(PROMPTS, COMPLETIONS)
    assert x == pytest.approx(y, abs=1e-6) and x == pytest.approx(z, abs=1e-6)


def test_sigmoid_of_the_chosen_logit_and_the_declared_direction(two_heads):
    m = BiasRewardModel(two_heads)
    logits = m.pair_logits(PROMPTS, COMPLETIONS)
    assert m.score_pairs(PROMPTS, COMPLETIONS) == pytest.approx([1 / (1 + math.exp(-r[0])) for r in logits])
    flipped = BiasRewardModel(two_heads, direction="higher_is_more_biased").score_pairs(PROMPTS, COMPLETIONS)
    assert flipped == pytest.approx([1 / (1 + math.exp(r[0])) for r in logits])
    topic = BiasRewardModel(two_heads, unbiased_label="on_topic").score_pairs(PROMPTS, COMPLETIONS)
    assert topic == pytest.approx([1 / (1 + math.exp(-r[1])) for r in logits])


def test_relevance_reward_uses_the_on_topic_head_and_nothing_said_scores_zero(two_heads):
    from engine.rewards import build_reward

    with build_reward([{"name": "relevance", "params": {"path": str(two_heads)}},
                       {"name": "bias_rm", "params": {"path": str(two_heads)}}]) as reward:
        out = reward(["Tell me about nurses."] * 3, ["Nurses work in many places.", "", "   "])
    logits = BiasRewardModel(two_heads).pair_logits(["Tell me about nurses."], ["Nurses work in many places."])[0]
    assert out.per_function["relevance"][0] == pytest.approx(1 / (1 + math.exp(-logits[1])))
    assert out.per_function["relevance"][1:] == [0.0, 0.0]
    assert out.per_function["bias_rm"][0] == pytest.approx(1 / (1 + math.exp(-logits[0])))


def test_any_folder_with_a_declared_direction_and_transform(one_logit, tmp_path):
    """A regression head that grows with bias (say, an external model on disk) works with direction + transform."""
    from engine.rewards import build_reward

    raw = BiasRewardModel(one_logit, transform="raw").score(["A sentence."])[0]
    with build_reward([{"name": "bias_rm", "params": {"path": str(one_logit), "transform": "sigmoid",
                                                      "direction": "higher_is_more_biased"}}]) as reward:
        got = reward(["prompt"], ["A sentence."]).per_function["bias_rm"][0]
    assert got == pytest.approx(1 / (1 + math.exp(raw)))  # the folder declares no input: it reads the completion
    declared = _tiny_folder(tmp_path / "declared", extra={"direction": "higher_is_more_biased", "transform": "raw"})
    assert BiasRewardModel(declared).score(["A sentence."])[0] == pytest.approx(-raw, abs=1e-5)
    with pytest.raises(ValueError, match="direction"):
        BiasRewardModel(one_logit, direction="sideways")


def test_new_parameters_are_checked_without_loading_a_model():
    from engine.rewards.base import validate_params

    with pytest.raises(ValueError, match="input must be one of"):
        validate_params("bias_rm", {"input": "prompt"})
    with pytest.raises(ValueError, match="direction must be one of"):
        validate_params("bias_rm", {"direction": "up"})
    with pytest.raises(ValueError, match="include_prompt"):
        validate_params("bias_rm", {"include_prompt": True, "input": "pair"})
    with pytest.raises(ValueError, match="at most 65536"):
        validate_params("relevance", {"batch_size": 0})
    validate_params("bias_rm", {"path": "org/model", "input": "completion", "direction": "higher_is_more_biased"})
