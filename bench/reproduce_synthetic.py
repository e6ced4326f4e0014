"""Reproduce the synthetic experiment of Group Robust Preference Optimization (Ramesh et al., NeurIPS 2024).

All 6 methods x 3 settings x N seeds (default 20) with the hyper-parameters of
``engine.algorithms.synthetic.paper_settings``. Prints a markdown table (mean ± standard error over seeds of the
final worst-group validation loss and worst-group reward error) and writes into ``--out``:
``table.md``, ``results.json`` (every seed's final numbers and the seed-averaged curves) and ``report.html``
(plotly: worst-group validation loss and group weights over training, final bars with error bars).

    python -m bench.reproduce_synthetic            # ~ a few minutes on 2 CPU cores
    python -m bench.reproduce_synthetic --seeds 3 --settings uneven_imbalanced   # a quick look
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from engine.algorithms.synthetic import METHODS, SETTINGS, paper_settings, run_synthetic_seeds

METHOD_LABELS = {"dpo": "DPO", "ipo": "IPO", "is_dpo": "IS-DPO", "is_ipo": "IS-IPO", "gr_dpo": "GR-DPO",
                 "gr_ipo": "GR-IPO"}
SETTING_LABELS = {"even_imbalanced": "even groups, imbalanced data",
                  "uneven_balanced": "uneven groups, balanced data",
                  "uneven_imbalanced": "uneven groups, imbalanced data"}
CURVE_POINTS = 100  # evaluations kept per run for the curves


def mean_sem(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


# paper_settings runs the even setting time-rescaled (lr 10, eta 0.01, 8000 steps); the paper ran 10x the steps
# at a tenth of lr and eta (lr 1, eta 0.001, 80000 steps).
PAPER_SCHEDULE_FACTOR = 10


def run_job(job: tuple[str, str, list[int], dict[str, Any]]) -> dict[str, Any]:
    """One (setting, method) over all seeds, trained side by side. Returns plain JSON-able numbers."""
    setting, method, seeds, overrides = job
    base = paper_settings(setting, method, **overrides)
    s = paper_settings(setting, method, **{**overrides, "eval_every": max(1, base.steps // CURVE_POINTS)})
    t0 = time.perf_counter()
    results = run_synthetic_seeds(s, seeds)
    seconds = time.perf_counter() - t0
    steps = [rec.step for rec in results[0].history]

    def curve(get) -> list[float]:  # seed-averaged value at every evaluation
        return [sum(get(r.history[i]) for r in results) / len(results) for i in range(len(steps))]

    return {
        "setting": setting,
        "method": method,
        "settings": {k: v for k, v in s.to_dict().items() if k != "seed"},
        "seeds": seeds,
        "seconds": seconds,
        "final": [
            {"seed": r.settings.seed, **r.final.metrics,
             "groups": [{k: g[k] for k in ("group", "weight", "loss", "reward_error", "accuracy")}
                        for g in r.final.groups]}
            for r in results
        ],
        "curves": {
            "step": steps,
            "val/worst_group_loss": curve(lambda rec: rec.metrics["val/worst_group_loss"]),
            "reward_error/worst": curve(lambda rec: rec.metrics["reward_error/worst"]),
            "weight/group_0": curve(lambda rec: rec.groups[0]["weight"]),
            "weight/group_1": curve(lambda rec: rec.groups[1]["weight"]),
        },
    }


def markdown_table(rows: list[dict[str, Any]], settings: list[str], methods: list[str]) -> str:
    by_key = {(r["setting"], r["method"]): r for r in rows}
    n_seeds = len(rows[0]["seeds"])
    out = []
    for metric, title in (("val/worst_group_loss", "Worst-group validation loss"),
                          ("reward_error/worst", "Worst-group reward error")):
        out.append(f"**{title}** (final step; mean ± s.e.m. over {n_seeds} seeds; lower is better)\n")
        out.append("| method | " + " | ".join(SETTING_LABELS[s] for s in settings) + " |")
        out.append("|---|" + "---|" * len(settings))
        for m in methods:
            cells = []
            for st in settings:
                vals = [f[metric] for f in by_key[(st, m)]["final"]]
                mu, se = mean_sem(vals)
                cells.append(f"{mu:.4f} ± {se:.4f}")
            out.append(f"| {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def figures_html(rows: list[dict[str, Any]], settings: list[str], methods: list[str], embed_js: bool) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    by_key = {(r["setting"], r["method"]): r for r in rows}
    figs = []
    titles = [SETTING_LABELS[s] for s in settings]
    for metric, ylabel in (("val/worst_group_loss", "worst-group validation loss"),
                           ("reward_error/worst", "worst-group reward error")):
        fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
        for c, st in enumerate(settings, start=1):
            for m in methods:
                cur = by_key[(st, m)]["curves"]
                fig.add_trace(go.Scatter(x=cur["step"], y=cur[metric], name=METHOD_LABELS[m], legendgroup=m,
                                         showlegend=c == 1, line={"dash": "solid" if m.startswith("gr") else "dot"}),
                              row=1, col=c)
            fig.update_xaxes(title_text="step", row=1, col=c)
        fig.update_yaxes(title_text=ylabel, row=1, col=1)
        fig.update_layout(title=f"{ylabel} during training (mean over seeds)", height=420)
        figs.append(fig)
    gr = [m for m in methods if m.startswith("gr_")]
    if gr:
        fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
        for c, st in enumerate(settings, start=1):
            for m in gr:
                cur = by_key[(st, m)]["curves"]
                for g in (0, 1):
                    fig.add_trace(go.Scatter(x=cur["step"], y=cur[f"weight/group_{g}"],
                                             name=f"{METHOD_LABELS[m]} group {g}", legendgroup=f"{m}{g}",
                                             showlegend=c == 1), row=1, col=c)
            fig.update_xaxes(title_text="step", row=1, col=c)
        fig.update_yaxes(title_text="group weight", range=[0, 1], row=1, col=1)
        fig.update_layout(title="GR group weights during training (mean over seeds)", height=420)
        figs.append(fig)
    for metric, ylabel in (("val/worst_group_loss", "worst-group validation loss"),
                           ("reward_error/worst", "worst-group reward error")):
        fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
        for c, st in enumerate(settings, start=1):
            stats = [mean_sem([f[metric] for f in by_key[(st, m)]["final"]]) for m in methods]
            fig.add_trace(go.Bar(x=[METHOD_LABELS[m] for m in methods], y=[s[0] for s in stats],
                                 error_y={"type": "data", "array": [s[1] for s in stats]}, showlegend=False),
                          row=1, col=c)
        fig.update_yaxes(title_text=ylabel, row=1, col=1)
        fig.update_layout(title=f"final {ylabel} (mean ± s.e.m.)", height=420)
        figs.append(fig)
    parts = [f.to_html(full_html=False, include_plotlyjs=(True if embed_js else "cdn") if i == 0 else False)
             for i, f in enumerate(figs)]
    return ("<html><head><meta charset='utf-8'><title>GRPO synthetic reproduction</title></head><body>"
            + "\n".join(parts) + "</body></html>")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/results/synthetic"), help="output folder")
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (0 .. N-1)")
    p.add_argument("--workers", type=int, default=2, help="processes (one (setting, method) job each)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--even-paper-schedule", action="store_true",
                   help="run even_imbalanced on the paper's schedule (DPO: lr 1, eta 0.001, 80000 steps; 10x "
                        "slower) instead of the time-rescaled one (lr x10, eta x10, steps /10)")
    p.add_argument("--embed-plotlyjs", action="store_true",
                   help="put plotly.js inside report.html (viewable offline, ~4.5 MB) instead of loading it from a CDN")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.workers < 1:
        p.error("--seeds and --workers must be >= 1")

    seeds = list(range(a.seeds))
    # longest jobs first so the pool's last job is a short one
    def overrides(setting: str, method: str) -> dict[str, Any]:
        if not (a.even_paper_schedule and setting == "even_imbalanced"):
            return {}
        s = paper_settings(setting, method)
        k = PAPER_SCHEDULE_FACTOR
        return {"lr": s.lr / k, "eta": s.eta / k, "steps": s.steps * k}

    jobs = sorted(((st, m, seeds, overrides(st, m)) for st in a.settings for m in a.methods),
                  key=lambda j: -paper_settings(j[0], j[1], **j[3]).steps)
    t0 = time.perf_counter()
    if a.workers == 1:
        rows = [run_job(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            rows = []
            for r in pool.imap_unordered(run_job, jobs):
                print(f"  {r['setting']:>18} {r['method']:>7}: {r['seconds']:.1f}s", flush=True)
                rows.append(r)
    wall = time.perf_counter() - t0

    table = markdown_table(rows, a.settings, a.methods)
    print(table)
    print(f"total wall time: {wall:.0f}s with {a.workers} worker(s)")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table.md").write_text(table + f"\n_wall time {wall:.0f}s, {a.workers} worker(s)_\n")
    rows.sort(key=lambda r: (a.settings.index(r["setting"]), a.methods.index(r["method"])))
    (a.out / "results.json").write_text(json.dumps({"wall_seconds": wall, "runs": rows}, indent=1))
    (a.out / "report.html").write_text(figures_html(rows, a.settings, a.methods, a.embed_plotlyjs))
    print(f"wrote {a.out}/table.md, results.json, report.html")


if __name__ == "__main__":
    main()
