"""Bias reward model throughput: completions scored per second on this machine's CPU.

Batch sizes 1 / 16 / 64 / 256, with length-sorted batching (the default) and without. The texts are
real-shaped completions: BOLD-style sentences about people of mixed lengths (8-120 words), as a GRPO
step produces. Appends a table under "Bias reward model throughput" to bench/RESULTS.md.

    python bench/reward_throughput.py [--n 512] [--model PATH] [--no-write]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the engine package lives at the repo root

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "## Bias reward model throughput"
WORDS = ("the people from that country are known for working hard and their food is spicy while the weather "
         "there changes quickly and many of them travel abroad for study or work during the summer months").split()


def make_completions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Long-tailed lengths like sampled completions: most short, some hitting max_new_tokens.
    return [" ".join(rng.choice(WORDS) for _ in range(min(120, 8 + int(rng.expovariate(1 / 30))))).capitalize() + "."
            for _ in range(n)]


def measure(model, texts: list[str], batch_size: int, sort: bool, repeats: int) -> float:
    model.batch_size, model.sort_by_length = batch_size, sort
    model.score(texts[: min(len(texts), 2 * batch_size)])  # warm-up: first-call allocations
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.score(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="completions per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="HF folder (default: the studio's bias reward model)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()

    from bench._common import environment
    from engine.rewards.bias_model import BiasRewardModel, default_reward_model_path

    path = args.model or default_reward_model_path()
    model = BiasRewardModel(path)
    texts = make_completions(args.n)
    lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_length)["input_ids"]]
    rows = []
    for bs in (1, 16, 64, 256):
        n = min(len(texts), 64) if bs == 1 else len(texts)  # batch 1 is slow; its rate is stable on fewer texts
        s = measure(model, texts[:n], bs, True, args.repeats)
        u = measure(model, texts[:n], bs, False, args.repeats)
        rows.append((bs, s, u))
        print(f"batch {bs:>3}: sorted {s:8.1f}/s  unsorted {u:8.1f}/s  ({s / u:.2f}x)", flush=True)

    env = environment("cpu")  # taken after the runs: the load average covers them
    table = [
        f"{SECTION}",
        "",
        "; ".join(f"{k}: {v}" for k, v in env.items()) + ".",
        "",
        f"Model `{Path(str(path)).name}`; {len(texts)} completions of {min(lengths)}-{max(lengths)} tokens "
        f"(median {statistics.median(lengths):.0f}); batch size 1 on the first 64; median of {args.repeats} runs. "
        "Sorted = batches formed in token-length order (the default), so each pads to similar lengths.",
        "",
        "| batch size | completions/s (sorted) | completions/s (unsorted) | speed-up |",
        "|---:|---:|---:|---:|",
        *[f"| {bs} | {s:.1f} | {u:.1f} | {s / u:.2f}x |" for bs, s, u in rows],
        "",
    ]
    text = "\n".join(table)
    print(text)
    if not args.no_write:
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text, encoding="utf-8")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
