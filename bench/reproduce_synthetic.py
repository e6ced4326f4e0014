"""Reproduce the synthetic experiment of Group Robust Preference Optimization (Ramesh et al., NeurIPS 2024).

Every row x 3 settings x N seeds (default 20) x both feature types, with the authors' hyper-parameters
(``engine.algorithms.synthetic.paper_settings``, HEAD of their scripts unless ``--revision``). Prints markdown
tables (mean ± standard error over seeds of the final worst-group validation loss and worst-group reward error)
and writes into ``--out``: ``table.md``, ``results.json`` (every seed's final numbers and the seed-averaged
curves) and ``report.html`` (plotly: worst-group validation loss and group weights over training, final bars
with error bars).

    python -m bench.reproduce_synthetic            # ~ a minute or two on 2 CPU cores
    python -m bench.reproduce_synthetic --seeds 3 --settings uneven_imbalanced --feature-types swapped   # a look
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from engine.algorithms.synthetic import (
    ALGORITHM1_GR_IPO,
    FEATURE_TYPES,
    SCRIPT_COMMITS,
    SCRIPT_REVISIONS,
    SETTINGS,
    paper_settings,
)
from engine.runs.synthetic import run_synthetic_seeds

# row -> (method, overrides of paper_settings, label). The GR-IPO rows beyond the first put the authors' code
# (their closed form with its quirks, as the plotting scripts select: 100 steps) next to even.sh's 1000 steps
# and the paper's Algorithm 1, solved exactly and by gradient steps (the studio's earlier GR-IPO).
ROWS: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpo": ("dpo", {}, "DPO"),
    "is_dpo": ("is_dpo", {}, "IS-DPO"),
    "gr_dpo": ("gr_dpo", {}, "GR-DPO"),
    "ipo": ("ipo", {}, "IPO"),
    "is_ipo": ("is_ipo", {}, "IS-IPO"),
    "gr_ipo": ("gr_ipo", {}, "GR-IPO (authors' code, 100 steps)"),
    "gr_ipo_1000": ("gr_ipo", {"steps": 1000}, "GR-IPO (authors' code, 1000 steps)"),
    "gr_ipo_paper": ("gr_ipo", {"closed_form_weights": "paper"}, "GR-IPO (Algorithm 1, exact policy step)"),
    "gr_ipo_alg1": ("gr_ipo", dict(ALGORITHM1_GR_IPO), "GR-IPO (Algorithm 1, gradient steps)"),
}
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


def row_settings(setting: str, row: str, feature_type: str, revision: str, **extra: Any):
    method, overrides, _ = ROWS[row]
    return paper_settings(setting, method, revision=revision, feature_type=feature_type, **{**overrides, **extra})


def run_job(job: tuple[str, str, str, list[int], str]) -> dict[str, Any]:
    """One (setting, row, feature type) over all seeds, trained side by side. Returns plain JSON-able numbers."""
    setting, row, feature_type, seeds, revision = job
    base = row_settings(setting, row, feature_type, revision)
    s = row_settings(setting, row, feature_type, revision, eval_every=max(1, base.steps // CURVE_POINTS))
    t0 = time.perf_counter()
    results = run_synthetic_seeds(s, seeds)
    seconds = time.perf_counter() - t0
    steps = [rec.step for rec in results[0].history]

    def curve(get) -> list[float]:  # seed-averaged value at every evaluation
        return [sum(get(r.history[i]) for r in results) / len(results) for i in range(len(steps))]

    return {
        "setting": setting,
        "row": row,
        "method": s.method,
        "feature_type": feature_type,
        "settings": {k: v for k, v in s.to_dict().items() if k != "seed"},
        "seeds": seeds,
        "seconds": seconds,
        "final": [
            {"seed": r.settings.seed, **r.final.metrics,
             "groups": [{k: g[k] for k in ("group", "weight", "alpha", "loss", "reward_error", "accuracy")}
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


def markdown_table(runs: list[dict[str, Any]], settings: list[str], rows: list[str], feature_type: str) -> str:
    by_key = {(r["setting"], r["row"]): r for r in runs if r["feature_type"] == feature_type}
    n_seeds = len(runs[0]["seeds"])
    out = []
    for metric, title in (("val/worst_group_loss", "Worst-group validation loss"),
                          ("reward_error/worst", "Worst-group reward error")):
        out.append(f"**{title}**, {feature_type} features (final step; mean ± s.e.m. over {n_seeds} seeds; "
                   "lower is better)\n")
        out.append("| method | " + " | ".join(SETTING_LABELS[s] for s in settings) + " |")
        out.append("|---|" + "---|" * len(settings))
        for row in rows:
            cells = []
            for st in settings:
                mu, se = mean_sem([f[metric] for f in by_key[(st, row)]["final"]])
                cells.append(f"{mu:.4f} ± {se:.4f}")
            out.append(f"| {ROWS[row][2]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def figures_html(runs: list[dict[str, Any]], settings: list[str], rows: list[str], feature_types: list[str],
                 embed_js: bool) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs = []
    titles = [SETTING_LABELS[s] for s in settings]
    for ft in feature_types:
        by_key = {(r["setting"], r["row"]): r for r in runs if r["feature_type"] == ft}
        for metric, ylabel in (("val/worst_group_loss", "worst-group validation loss"),
                               ("reward_error/worst", "worst-group reward error")):
            fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
            for c, st in enumerate(settings, start=1):
                for row in rows:
                    cur = by_key[(st, row)]["curves"]
                    fig.add_trace(go.Scatter(x=cur["step"], y=cur[metric], name=ROWS[row][2], legendgroup=row,
                                             showlegend=c == 1,
                                             line={"dash": "solid" if row.startswith("gr") else "dot"}),
                                  row=1, col=c)
                fig.update_xaxes(title_text="step", type="log", row=1, col=c)
            fig.update_yaxes(title_text=ylabel, row=1, col=1)
            fig.update_layout(title=f"{ylabel} during training, {ft} features (mean over seeds)", height=420)
            figs.append(fig)
        gr = [r for r in rows if r.startswith("gr_")]
        if gr:
            fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
            for c, st in enumerate(settings, start=1):
                for row in gr:
                    cur = by_key[(st, row)]["curves"]
                    for g in (0, 1):
                        fig.add_trace(go.Scatter(x=cur["step"], y=cur[f"weight/group_{g}"],
                                                 name=f"{ROWS[row][2]} group {g}", legendgroup=f"{row}{g}",
                                                 showlegend=c == 1), row=1, col=c)
                fig.update_xaxes(title_text="step", type="log", row=1, col=c)
            fig.update_yaxes(title_text="group's share of the objective", range=[0, 1], row=1, col=1)
            fig.update_layout(title=f"GR group weights during training, {ft} features (mean over seeds)", height=420)
            figs.append(fig)
        for metric, ylabel in (("val/worst_group_loss", "worst-group validation loss"),
                               ("reward_error/worst", "worst-group reward error")):
            fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles)
            for c, st in enumerate(settings, start=1):
                stats = [mean_sem([f[metric] for f in by_key[(st, row)]["final"]]) for row in rows]
                fig.add_trace(go.Bar(x=[ROWS[row][2] for row in rows], y=[s[0] for s in stats],
                                     error_y={"type": "data", "array": [s[1] for s in stats]}, showlegend=False),
                              row=1, col=c)
            fig.update_yaxes(title_text=ylabel, row=1, col=1)
            fig.update_layout(title=f"final {ylabel}, {ft} features (mean ± s.e.m.)", height=420)
            figs.append(fig)
    parts = [f.to_html(full_html=False, include_plotlyjs=(True if embed_js else "cdn") if i == 0 else False)
             for i, f in enumerate(figs)]
    return ("<html><head><meta charset='utf-8'><title>GRPO synthetic reproduction</title></head><body>"
            + "\n".join(parts) + "</body></html>")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/results/synthetic"), help="output folder")
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (0 .. N-1)")
    p.add_argument("--workers", type=int, default=2, help="processes (one (setting, row, features) job each)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="methods and variants")
    p.add_argument("--feature-types", nargs="+", default=list(FEATURE_TYPES), choices=FEATURE_TYPES,
                   help="swapped: the authors' reproduce scripts; flipped: the runs their plotting scripts read")
    p.add_argument("--revision", default="head", choices=list(SCRIPT_REVISIONS),
                   help="which commit of the authors' scripts sets the DPO hyper-parameters "
                        + ", ".join(f"{k} = {v[:12]}" for k, v in SCRIPT_COMMITS.items()))
    p.add_argument("--embed-plotlyjs", action="store_true",
                   help="put plotly.js inside report.html (viewable offline, ~4.5 MB) instead of loading it from a CDN")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.workers < 1:
        p.error("--seeds and --workers must be >= 1")

    seeds = list(range(a.seeds))
    # longest jobs first so the pool's last job is a short one
    jobs = sorted(((st, row, ft, seeds, a.revision) for ft in a.feature_types for st in a.settings for row in a.rows),
                  key=lambda j: -row_settings(j[0], j[1], j[2], j[4]).steps)
    t0 = time.perf_counter()
    if a.workers == 1:
        runs = [run_job(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            runs = []
            for r in pool.imap_unordered(run_job, jobs):
                print(f"  {r['feature_type']:>8} {r['setting']:>18} {r['row']:>13}: {r['seconds']:.1f}s", flush=True)
                runs.append(r)
    wall = time.perf_counter() - t0

    head = (f"_authors' scripts at revision {a.revision} ({SCRIPT_COMMITS[a.revision]}); "
            f"{a.seeds} seeds; wall time {wall:.0f}s, {a.workers} worker(s)_\n")
    table = "\n".join(markdown_table(runs, a.settings, a.rows, ft) for ft in a.feature_types)
    print(table)
    print(head)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table.md").write_text(table + "\n" + head)
    runs.sort(key=lambda r: (a.feature_types.index(r["feature_type"]), a.settings.index(r["setting"]),
                             a.rows.index(r["row"])))
    (a.out / "results.json").write_text(json.dumps({"wall_seconds": wall, "revision": a.revision,
                                                    "commit": SCRIPT_COMMITS[a.revision], "runs": runs}, indent=1))
    (a.out / "report.html").write_text(figures_html(runs, a.settings, a.rows, a.feature_types, a.embed_plotlyjs))
    print(f"wrote {a.out}/table.md, results.json, report.html")


if __name__ == "__main__":
    main()
