"""Chart query speed on a store with 1,000,000 metric rows (10 keys x 100,000 steps) plus group stats.

Times the dashboard's reads: full resolution, database-side downsampling (<= 2000 buckets with min/max),
and the incremental "steps after N" read the live page does every refresh. Appends a table to
bench/RESULTS.md under "Chart query speed".

    python bench/chart_queries.py [--steps 100000] [--keys 10] [--repeat 5] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from db.models import GroupStat, MetricPoint, utcnow  # noqa: E402
from engine.submission import submit_run  # noqa: E402
from db.reads import group_series, metric_series  # noqa: E402
from db.session import Store  # noqa: E402
from engine.config import parse_config  # noqa: E402


def build(store: Store, steps: int, keys: int, groups: int) -> int:
    run_id = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": steps}))
    now = utcnow()
    chunk = 50_000
    names = [f"metric/{k}" for k in range(keys)]
    rows = ({"run_id": run_id, "step": s, "key": k, "value": (s % 97) / 97.0, "time": now}
            for s in range(1, steps + 1) for k in names)
    batch: list[dict] = []
    for r in rows:
        batch.append(r)
        if len(batch) == chunk:
            with store.write() as sess:
                sess.execute(insert(MetricPoint), batch)
            batch = []
    if batch:
        with store.write() as sess:
            sess.execute(insert(MetricPoint), batch)
    g_rows = [{"run_id": run_id, "step": s, "group": f"g{g}", "weight": 1.0 / groups, "loss": 0.5}
              for s in range(1, steps + 1) for g in range(groups)]
    for i in range(0, len(g_rows), chunk):
        with store.write() as sess:
            sess.execute(insert(GroupStat), g_rows[i:i + chunk])
    return run_id


def timed(fn, repeat: int) -> tuple[float, int]:
    times, points = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        points = sum(len(s) for s in out.values())
    return statistics.median(times) * 1000, points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="Print the table without appending to RESULTS.md.")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        t = time.perf_counter()
        run_id = build(store, args.steps, args.keys, args.groups)
        build_s = time.perf_counter() - t
        n = args.steps * args.keys
        last = args.steps
        cases = [
            ("one key, full resolution", lambda: metric_series(store, run_id, ["metric/0"], max_points=None)),
            ("one key, downsampled (<= 2000 buckets)", lambda: metric_series(store, run_id, ["metric/0"])),
            (f"all {args.keys} keys, full resolution", lambda: metric_series(store, run_id, None, max_points=None)),
            (f"all {args.keys} keys, downsampled", lambda: metric_series(store, run_id, None)),
            (f"all {args.keys} keys, new steps only (last 10)",
             lambda: metric_series(store, run_id, None, since_step=last - 10)),
            (f"group weights, {args.groups} groups, downsampled", lambda: group_series(store, run_id, "weight")),
            ("group weights, new steps only (last 10)",
             lambda: group_series(store, run_id, "weight", since_step=last - 10)),
        ]
        results = [(name, *timed(fn, args.repeat)) for name, fn in cases]
        store.dispose()

    lines = ["\n## Chart query speed\n",
             f"{n:,} metric rows ({args.keys} keys x {args.steps:,} steps) + {args.steps * args.groups:,} group rows, "
             f"SQLite (WAL) on {platform.machine()} / Python {platform.python_version()}; built in {build_s:.0f} s; "
             f"median of {args.repeat}. `python bench/chart_queries.py`\n",
             "| read | points returned | time (ms) |", "|---|---:|---:|"]
    lines += [f"| {name} | {pts:,} | {ms:,.1f} |" for name, ms, pts in results]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = ROOT / "bench" / "RESULTS.md"
        if not out.exists():
            out.write_text("# Benchmark results\n")
        with out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
