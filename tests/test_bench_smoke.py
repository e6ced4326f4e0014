"""The TRL side-by-side benchmarks stay runnable: both scripts at a tiny size on the CPU (no timing assertions),
plus the turn taking they rely on. (The forced completion length is the engine's own ``ignore_eos`` option,
tested with the samplers.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_bench(script: str, args: list[str], tmp_path: Path) -> dict:
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "bench" / script), "--model", "tiny", "--workdir", str(tmp_path / "work"),
           "--json", str(out), "--steps", "1", "--warmup", "1", *args]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_grpo_bench_runs_at_tiny_size(studio_home, tmp_path):
    data = _run_bench("grpo_vs_trl.py", ["--prompts", "2", "--group-size", "2", "--completion-len", "4",
                                         "--micro-batch", "2", "--sampler", "hf", "--reward", "length"], tmp_path)
    guard = data["guard"]
    assert {(g["trl_loss"], g["trl_level"]) for g in guard} == {("dapo", "token"), ("grpo", "token"),
                                                                ("dr_grpo", "token"), ("dapo", "sequence"),
                                                                ("bnpo", "token"), ("cispo", "token")}
    assert all(g["ok"] for g in guard), guard
    studio, trl = data["studio"], data["trl"]
    assert len(studio["step_s"]) == 1 and len(trl["step_s"]) == 1
    # forced length: 2 prompts x 2 completions x exactly 4 tokens on the studio side (EOS never ends one early)
    assert studio["work"] == [16.0]
    assert {"sample", "reward", "logprobs", "update", "sync"} <= set(studio["phases"])
    assert math.isfinite(data["summary"]["ratio"]) and data["summary"]["ratio"] > 0


@pytest.mark.slow
def test_dpo_bench_runs_at_tiny_size(studio_home, tmp_path):
    data = _run_bench("dpo_vs_trl.py", ["--pairs", "2", "--micro-batch", "1", "--max-length", "128"], tmp_path)
    assert [g["ok"] for g in data["guard"]] == [True, True], data["guard"]
    records = data["records"]
    assert set(records) == {"trl", "dpo", "gr_dpo"}
    assert all(len(r["step_s"]) == 1 for r in records.values())
    # two micro-batches per step: GR-DPO pays its no-grad pre-pass for the group weights, plain DPO does not
    assert "weights" in records["gr_dpo"]["phases"] and "weights" not in records["dpo"]["phases"]
    assert math.isfinite(data["summary"]["gr_overhead"])


def test_baton_takes_turns_in_ring_order_and_skips_finished_sides():
    from bench._common import Baton

    baton = Baton(["a", "b", "c"])
    log: list[str] = []

    def side(name: str, turns: int) -> None:
        for _ in range(turns):
            baton.wait(name)
            log.append(name)
            baton.pass_on(name)
        baton.wait(name)
        baton.finish(name)

    threads = [threading.Thread(target=side, args=(n, k)) for n, k in (("a", 3), ("b", 1), ("c", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    # b retires after one turn: the ring then alternates a and c only
    assert log == ["a", "b", "c", "a", "c", "a"]


def test_baton_error_wakes_waiting_sides():
    from bench._common import Baton

    baton = Baton(["a", "b"])
    raised: list[BaseException] = []

    def waiter() -> None:
        try:
            baton.wait("b")
        except RuntimeError as exc:
            raised.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    baton.finish("a", ValueError("boom"))
    t.join(timeout=20)
    assert not t.is_alive()
    assert len(raised) == 1 and isinstance(raised[0].__cause__, ValueError)
