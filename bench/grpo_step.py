"""Time a BiasGRPO step phase by phase (sample, reward, logprobs, update, sync) for a given model and batch.

It runs the real run loop (engine.runs.grpo) in this process against a throw-away store, so the numbers are the
ones a studio run logs, then prints a Markdown table (median over the timed steps, after warm-up steps).

    python bench/grpo_step.py --model embedded:smollm2-135m-instruct --prompts 4 --group-size 4 \
        --max-new-tokens 32 --steps 3 --warmup 1 --sampler hf --reward bias_rm

Use --model tiny to time a 2-layer random model with the SmolLM2 tokenizer (the test model).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHASES = ("sample", "reward", "logprobs", "update", "sync", "step")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, load average {os.getloadavg()[0]:.1f}")


def read_metrics(store, run_id: int) -> dict[int, dict[str, float | None]]:
    from sqlalchemy import select

    from db.models import MetricPoint

    out: dict[int, dict[str, float | None]] = {}
    with store.read() as s:
        for m in s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id)):
            out.setdefault(m.step, {})[m.key] = m.value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct", help="model id/folder, or 'tiny'")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    ap.add_argument("--sampler", default="hf", choices=("auto", "hf", "vllm"))
    ap.add_argument("--reward", default="bias_rm")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--num-iterations", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--use-lora", action="store_true")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    os.environ.setdefault("STUDIO_HOME", str(home))
    from db.session import Store
    from engine.config import parse_config
    from engine.runs.context import RunContext
    from engine.submission import submit_run
    from engine.runs.grpo import execute

    model = args.model
    if model == "tiny":
        from engine.models.tiny import make_tiny_model

        model = str(make_tiny_model(home / "tiny"))
    cfg = parse_config({
        "algorithm": "grpo", "model": model, "sampler": args.sampler, "device": args.device,
        "max_steps": args.steps + args.warmup, "prompts_per_step": args.prompts, "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens, "micro_batch_size": args.micro_batch_size,
        "num_iterations": args.num_iterations, "beta": args.beta, "rewards": [{"name": args.reward}],
        "eval_prompts": 0, "checkpoint_every": 0, "samples_logged": 0, "use_lora": args.use_lora,
        "learning_rate": 1e-5 if args.use_lora else 1e-6,
    })
    store = Store(f"sqlite:///{home / 'bench.db'}")
    run_id = submit_run(store, cfg)
    # the last step would write a checkpoint; the bench times steps, not checkpoint I/O, so skip it.
    ctx = RunContext(store, run_id, cfg, resume=False)
    ctx.checkpoint_due = lambda step: False  # type: ignore[method-assign]
    ctx.record_checkpoint = lambda *a, **k: None  # type: ignore[method-assign]
    execute(ctx)
    metrics = read_metrics(store, run_id)
    timed = [metrics[s] for s in sorted(metrics) if s > args.warmup]

    def med(key: str) -> float:
        vals = [m[key] for m in timed if m.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    print(f"Machine: {machine()}")
    print(f"Model {args.model}, sampler {args.sampler}, {args.prompts} prompts x G={args.group_size}, "
          f"max_new_tokens {args.max_new_tokens}, micro-batch {args.micro_batch_size}, mu={args.num_iterations}, "
          f"beta={args.beta}, reward {args.reward}, LoRA {args.use_lora}; median of {len(timed)} steps "
          f"after {args.warmup} warm-up\n")
    print("| phase | seconds | share of step |")
    print("|---|---:|---:|")
    step = med("time/step")
    for phase in PHASES:
        t = med(f"time/{phase}")
        print(f"| {phase} | {t:.2f} | {100 * t / step:.0f}% |")
    print(f"\ncompletion tokens/s (whole step): {med('tokens_per_s'):.1f}; sampling tokens/s: "
          f"{med('sample/tokens_per_s'):.1f}; mean completion length {med('completion/len_mean'):.1f}; "
          f"peak memory {med('memory/peak_mb'):.0f} MB")
    return 0


if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    raise SystemExit(main())
