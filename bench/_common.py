"""Shared pieces of the side-by-side benchmarks against Hugging Face TRL (bench/grpo_vs_trl.py, bench/dpo_vs_trl.py).

- ``SHAPES`` / ``make_random_model``: randomly initialised models of real architectures (SmolLM2-135M, Qwen2.5-0.5B)
  with the SmolLM2 tokenizer, for machines that hold no weights (the GPU machine). Weights do not change the
  cost of a step once the completion length is forced.
- ``Baton``: strict turn-taking between two training loops that each own their own loop (TRL's ``Trainer.train``
  and the studio's ``execute(ctx)``), so one invocation alternates their steps and both see the same machine load.
- ``MemoryWatch``: peak memory of one step, as the rise above the step's start (the two trainers share one process,
  so an absolute peak would count the other trainer's resident weights) plus the resident memory at the start.
- ``environment`` / ``markdown_table``: the record that goes into bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------- model shapes

@dataclass(frozen=True)
class ModelShape:
    """Architecture numbers of a public model (from its config.json on the hub)."""

    family: str  # "llama" or "qwen2"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    rope_theta: float
    max_positions: int
    tie_embeddings: bool = True


SHAPES: dict[str, ModelShape] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct
    "smollm2-135m": ModelShape("llama", 576, 30, 9, 3, 1536, 49152, 100000.0, 8192),
    # Qwen/Qwen2.5-0.5B-Instruct (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864)
    "qwen2.5-0.5b": ModelShape("qwen2", 896, 24, 14, 2, 4864, 151936, 1000000.0, 32768),
}


def make_random_model(path: Path, shape: str, *, seed: int = 0, dtype: str = "float32") -> Path:
    """A randomly initialised model of ``shape`` saved as an HF folder at ``path`` with the SmolLM2 tokenizer.

    The Qwen shape keeps its real 151,936-token vocabulary (the LM head is a quarter of its parameters and most
    of the log-prob cost); ids the SmolLM2 tokenizer does not know decode to nothing, which only shortens the
    texts the reward sees, on both sides alike.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from engine.models.default_model import default_tokenizer_path

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}: choose one of {', '.join(SHAPES)}")
    s = SHAPES[shape]
    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(default_tokenizer_path()))
    common = dict(
        vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate, num_hidden_layers=s.layers,
        num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=s.max_positions,
        rope_theta=s.rope_theta, tie_word_embeddings=s.tie_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=dtype,
    )
    config = LlamaConfig(**common) if s.family == "llama" else Qwen2Config(**common)
    cls = LlamaForCausalLM if s.family == "llama" else Qwen2ForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def resolve_bench_model(spec: str, workdir: Path, *, dtype: str = "float32") -> str:
    """``spec``: "default" (the embedded SmolLM2-135M), "tiny" (engine.models.tiny), "shape:<name>" (random
    weights of a real architecture, see SHAPES) or a model folder."""
    if spec == "default":
        from engine.models.default_model import default_model_path

        return str(default_model_path())
    if spec == "tiny":
        from engine.models.tiny import make_tiny_model

        folder = workdir / "tiny-model"
        if not (folder / "config.json").exists():
            make_tiny_model(folder)
        return str(folder)
    if spec.startswith("shape:"):
        name = spec.split(":", 1)[1]
        return str(make_random_model(workdir / f"random-{name}-{dtype}", name, dtype=dtype))
    if not Path(spec).is_dir():
        raise ValueError(f"model {spec!r} is not 'default', 'tiny', 'shape:NAME' or an existing model folder")
    return spec


# ------------------------------------------------------------------------------------------- turn taking

class Baton:
    """Loops that each own their own loop (in their own threads) take strict turns in a fixed ring order.

    ``wait(me)`` blocks until it is ``me``'s turn; ``pass_on(me)`` hands the turn to the next side in the ring that
    has not finished; ``finish(me)`` retires a side (passing the turn on if it held it). An error recorded by
    ``finish(me, exc)`` wakes every waiting side, which then raises, so no thread waits forever for a dead one.
    """

    def __init__(self, order: Sequence[str]):
        if len(set(order)) != len(order) or not order:
            raise ValueError(f"the turn order needs distinct side names, got {list(order)}")
        self._order = list(order)
        self._cond = threading.Condition()
        self._turn = self._order[0]
        self._done: set[str] = set()
        self.error: BaseException | None = None

    def _next(self, me: str) -> str:
        i = self._order.index(me)
        for k in range(1, len(self._order) + 1):
            side = self._order[(i + k) % len(self._order)]
            if side not in self._done:
                return side
        return me

    def wait(self, me: str) -> None:
        with self._cond:
            while self._turn != me and self.error is None:
                self._cond.wait()
            if self.error is not None:
                raise RuntimeError(f"another benchmark side failed; {me} stops") from self.error

    def pass_on(self, me: str) -> None:
        with self._cond:
            self._turn = self._next(me)
            self._cond.notify_all()

    @contextlib.contextmanager
    def side(self, me: str) -> Iterator[None]:
        """Run side ``me``'s loop in this block: it retires when the block ends; an error is recorded first, so the
        other sides stop waiting for a turn that will never come, and re-raised."""
        try:
            yield
        except BaseException as exc:
            self.finish(me, exc)
            raise
        self.finish(me)

    def finish(self, me: str, error: BaseException | None = None) -> None:
        with self._cond:
            self._done.add(me)
            if error is not None and self.error is None:
                self.error = error
            if self._turn == me:
                self._turn = self._next(me)
            self._cond.notify_all()


@dataclass
class SideRecord:
    """Per timed step of one side: wall time, memory, work done, and (studio sides) the engine's phase times."""

    step_s: list[float] = field(default_factory=list)
    resident_mb: list[float] = field(default_factory=list)
    peak_rise_mb: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)  # completion tokens (GRPO) or pairs (DPO) in the step
    phases: dict[str, list[float]] = field(default_factory=dict)
    logged: dict[str, list[float]] = field(default_factory=dict)  # TRL's own logged metrics, per logged step

    def add(self, wall: float, resident: float, rise: float, work: float) -> None:
        self.step_s.append(wall)
        self.resident_mb.append(resident)
        self.peak_rise_mb.append(rise)
        self.work.append(work)


class BenchContext:
    """The RunContext contract (engine/runs/context.py) without a store, for driving a studio runner's own
    ``execute(ctx)``: metrics go to a SideRecord, no checkpoints, no stop requests. Each logged step ends the
    side's turn. ``work(metrics)`` says how much work the step did (tokens or pairs)."""

    def __init__(self, name: str, config: Any, baton: Baton, record: SideRecord, device: str, warmup: int,
                 run_dir: Path, work: Any):
        self.name = name
        self.config = config
        self.run_id = 0
        self.resume = False
        self.stop_reason = None
        self.resume_checkpoint_path = None
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._baton, self._record, self._device, self._warmup, self._work = baton, record, device, warmup, work
        self._mem = MemoryWatch(device)
        self._t0 = 0.0
        self.begin_turn()

    def begin_turn(self) -> None:
        self._baton.wait(self.name)
        self._mem.start()
        self._t0 = now()

    def start_step(self) -> int:
        return 0

    def log_step(self, step: int, metrics: Any, groups: Any = (), samples: Any = ()) -> None:
        sync(self._device)
        wall = now() - self._t0
        resident, rise = self._mem.stop()
        if step > self._warmup:
            self._record.add(wall, resident, rise, float(self._work(metrics)))
            for k, v in metrics.items():
                if k.startswith("time/"):
                    self._record.phases.setdefault(k[5:], []).append(v)
        print(f"[{self.name}] step {step}: {wall:.2f} s " + " ".join(
            f"{k[5:]}={v:.2f}" for k, v in metrics.items() if k.startswith("time/")), flush=True)
        self._baton.pass_on(self.name)
        self.begin_turn()

    def checkpoint_due(self, step: int) -> bool:
        return False

    def should_stop(self) -> bool:
        return False

    def event(self, message: str, level: str = "info") -> None:
        print(f"[{self.name} {level}] {message}", flush=True)

    def setup(self, what: str) -> None:
        self.event(f"setup: {what}")

    def setup_done(self, start: int) -> None:
        self.event(f"setup done: training from step {start + 1}")

    def record_evaluation(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def checkpoint_dir(self, step: int) -> Path:
        raise RuntimeError("the benchmark context takes no checkpoints")

    def record_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the benchmark context takes no checkpoints")


def trl_alternate_callback(name: str, baton: Baton, record: SideRecord, device: str, warmup: int,
                           work_per_step: float) -> Any:
    """A TrainerCallback that times each TRL optimizer step (from the moment TRL got its turn to on_step_end,
    so data loading, generation, logging of the previous step and the update all count) and then passes the turn."""
    from transformers import TrainerCallback

    mem = MemoryWatch(device)

    class Alternate(TrainerCallback):
        def __init__(self) -> None:
            self.step = 0
            self.t0 = 0.0

        def begin(self) -> None:
            baton.wait(name)
            mem.start()
            self.t0 = now()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            wall = now() - self.t0
            resident, rise = mem.stop()
            self.step += 1
            if self.step > warmup:
                record.add(wall, resident, rise, work_per_step)
            print(f"[{name}] step {self.step}: {wall:.2f} s", flush=True)
            baton.pass_on(name)
            self.begin()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            # TRL logs each step's metrics after on_step_end; keep the numbers that show what work was done
            for key, value in (logs or {}).items():
                if isinstance(value, (int, float)) and key.startswith(("completions/", "loss", "grad_norm")):
                    record.logged.setdefault(key, []).append(float(value))

    return Alternate()


# ------------------------------------------------------------------------------------------- memory

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryWatch:
    """Resident memory at a step's start and the peak rise above it during the step.

    GPU: torch.cuda allocated bytes (the peak counter is reset at ``start``). CPU: the process RSS, polled every
    10 ms by a thread (a coarse but honest view; RSS cannot be reset).
    """

    def __init__(self, device: str):
        self.device = str(device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_bytes = 0
        self._peak = 0

    def start(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
            return
        self.start_bytes = self._peak = _rss_bytes()
        self._stop.clear()

        def poll() -> None:
            while not self._stop.wait(0.01):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """(resident MiB at start, peak rise MiB during the step)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes())
        return self.start_bytes / 2**20, max(0, peak - self.start_bytes) / 2**20


# ------------------------------------------------------------------------------------------- records

def median(xs: Sequence[float]) -> float:
    vals = [x for x in xs if not math.isnan(x)]
    return statistics.median(vals) if vals else float("nan")


def environment(device: str) -> dict[str, str]:
    """Machine, date, commit and load: what RESULTS.md needs next to every number."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                                cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=False, cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip()
        commit += "+uncommitted" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    if str(device).startswith("cuda"):
        machine = f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU threads"
    else:
        machine = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "absent"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return {"date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine,
            "commit": commit, "torch": torch.__version__, "trl": trl_version, "load (1/5/15 min)": load}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def grad_norm(params: Sequence[Any]) -> float:
    import torch

    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def now() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------------------------------- script plumbing

def start_bench(a: Any, prefix: str) -> tuple[Path, str, dict[str, Any]]:
    """Common start of a side-by-side script: check the device, make the scratch folder, resolve the model (bf16 on
    the GPU, float32 on the CPU), print the environment. Returns (workdir, model path, the JSON record so far)."""
    import tempfile

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but no CUDA GPU is visible")
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_bench_model(a.model, workdir, dtype="bfloat16" if a.device == "cuda" else "float32")
    env = environment(a.device)
    print("\n".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    return workdir, model_path, {"env": env, "args": {k: str(v) for k, v in vars(a).items()}}


def guard_passed(out: dict[str, Any], results: Sequence[Any], title: str, table: str) -> bool:
    """Print and record the correctness guard (results with ``.ok``); False, with the reason printed, if any
    loss definition disagrees, in which case the timings would not compare equal work."""
    print(f"\n{title}")
    print(table, flush=True)
    out["guard"] = [vars(g) | {"ok": g.ok} for g in results]
    if all(g.ok for g in results):
        return True
    print("guard FAILED: the two sides do not compute the same loss; timings would not compare equal work")
    return False


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=1, default=str))


def trl_lora_config() -> Any:
    """TRL's side of the LoRA comparison: the engine's LoRA settings for the benchmarks (r 16, alpha 32, q/k/v/o)."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
