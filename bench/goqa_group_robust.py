"""The group-robust paper's real-data study shape on the studio's stored runs: GR-IPO vs IPO on GlobalOpinionQA pairs
(countries as groups), max group loss and min group accuracy on the held-out pairs over training, with 95% intervals.

    python -m bench.goqa_group_robust --db sqlite:////path/to/studio.db IPO_RUN_ID GR_IPO_RUN_ID

Reads what the runs stored (no training here): the "heldout_preference" evaluations each preference run records
before training and every ``eval_every`` steps (loss/max_group, accuracy/min_group and their stratified bootstrap
intervals, engine/evaluation/group_metrics.py) and the GR run's group weights (metric weight/<country>). Refuses
runs that differ in anything but the algorithm and its own fields (eta, chi), so the comparison is like for like.
Writes docs/goqa_group_robust/{figure.html, figure.png, results.json, table.md}; the PNG is the HTML rendered by
Chromium through Playwright (a dev dependency) and is skipped, with a note, where no Chromium is found.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "goqa_group_robust"
BENCHMARK = "heldout_preference"
MAX_LOSS, MIN_ACC = "loss/max_group", "accuracy/min_group"
# fields that may differ between the compared runs: the algorithm, its own knobs and the label
OWN_FIELDS = {"algorithm", "name", "eta", "chi"}
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
COLOURS = {"ipo": "#0072B2", "gr_ipo": "#D55E00"}


def load_run(store: Any, run_id: int) -> dict[str, Any]:
    """A run's config, status, wall time, held-out evaluations (by step) and per-step group weights."""
    from sqlalchemy import select

    from db.models import Evaluation, MetricPoint, Run

    with store.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise SystemExit(f"run {run_id} does not exist in this database")
        evals = [{"step": e.step, **dict(e.metrics)} for e in s.scalars(
            select(Evaluation).where(Evaluation.run_id == run_id, Evaluation.benchmark == BENCHMARK)
            .order_by(Evaluation.step, Evaluation.id))]
        weights: dict[str, dict[int, float]] = {}
        for m in s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id,
                                                     MetricPoint.key.like("weight/%"))):
            weights.setdefault(m.key.removeprefix("weight/"), {})[m.step] = m.value
        wall = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
        return {"id": run.id, "algorithm": run.algorithm, "status": str(run.status.value), "config":
                json.loads(run.config_json), "wall_s": wall, "last_step": run.last_step, "evaluations": evals,
                "weights": {g: dict(sorted(v.items())) for g, v in sorted(weights.items())}}


def check_comparable(runs: list[dict[str, Any]]) -> None:
    first = runs[0]["config"]
    for other in runs[1:]:
        cfg = other["config"]
        diff = sorted(k for k in set(first) | set(cfg) if k not in OWN_FIELDS and first.get(k) != cfg.get(k))
        if diff:
            raise SystemExit(f"runs {runs[0]['id']} and {other['id']} differ in {diff}: compare runs with the same "
                             "seed, data and budget")
    for r in runs:
        if not r["evaluations"]:
            raise SystemExit(f"run {r['id']} stored no {BENCHMARK} evaluations (eval_prompts 0?)")


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: the first and last held-out evaluation's worst-group figures with their intervals."""
    rows = []
    for r in runs:
        first, last = r["evaluations"][0], r["evaluations"][-1]
        rows.append({
            "run": r["id"], "algorithm": r["algorithm"], "status": r["status"], "wall_s": r["wall_s"],
            "steps": r["last_step"], "first_step": first["step"], "last_step": last["step"],
            "max_group_loss_first": first[MAX_LOSS], "max_group_loss_last": last[MAX_LOSS],
            "max_group_loss_last_ci": last.get("ci", {}).get(MAX_LOSS),
            "worst_loss_group_last": last.get("worst_loss_group"),
            "min_group_accuracy_first": first[MIN_ACC], "min_group_accuracy_last": last[MIN_ACC],
            "min_group_accuracy_last_ci": last.get("ci", {}).get(MIN_ACC),
            "worst_accuracy_group_last": last.get("worst_accuracy_group"),
            "mean_loss_last": last.get("loss"), "accuracy_last": last.get("accuracy"),
            "heldout_pairs": sum(v for k, v in last.items() if k.startswith("count/")),
        })
    return rows


def _fmt_ci(ci: list[float] | None, digits: int) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "-"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| run | algorithm | steps | wall time | max group loss, step 0 → last [95% CI] | worst group | "
            "min group accuracy, step 0 → last [95% CI] | worst group |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] else "-"
        lines.append(
            f"| {r['run']} | {r['algorithm']} | {r['steps']} | {wall} | "
            f"{r['max_group_loss_first']:.2f} → {r['max_group_loss_last']:.2f} {_fmt_ci(r['max_group_loss_last_ci'], 2)}"
            f" | {r['worst_loss_group_last']} | {r['min_group_accuracy_first']:.3f} → {r['min_group_accuracy_last']:.3f}"
            f" {_fmt_ci(r['min_group_accuracy_last_ci'], 3)} | {r['worst_accuracy_group_last']} |")
    return "\n".join(lines) + "\n"


def figure(runs: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    gr = [r for r in runs if r["weights"]]
    n_rows = 3 if gr else 2
    titles = ["Max group loss (IPO loss, held-out pairs), 95% CI", "Min group reward accuracy (held-out pairs), 95% CI"]
    if gr:
        titles.append("GR-IPO group weights (alpha) over training")
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.07)
    for r in runs:
        steps = [e["step"] for e in r["evaluations"]]
        colour = COLOURS.get(r["algorithm"])
        label = f"{r['algorithm'].upper().replace('_', '-')} (run {r['id']})"
        for row, key in ((1, MAX_LOSS), (2, MIN_ACC)):
            vals = [e[key] for e in r["evaluations"]]
            cis = [e.get("ci", {}).get(key) or [v, v] for e, v in zip(r["evaluations"], vals)]
            fig.add_trace(go.Scatter(
                x=steps, y=vals, mode="lines+markers", name=label, legendgroup=label, showlegend=row == 1,
                line={"color": colour},
                error_y={"type": "data", "symmetric": False, "array": [c[1] - v for c, v in zip(cis, vals)],
                         "arrayminus": [v - c[0] for c, v in zip(cis, vals)], "visible": True},
                customdata=[[e.get("worst_loss_group" if key == MAX_LOSS else "worst_accuracy_group")]
                            for e in r["evaluations"]],
                hovertemplate="step %{x}: %{y:.3f} (worst: %{customdata[0]})<extra>" + label + "</extra>"),
                row=row, col=1)
    for r in gr:
        for g, by_step in r["weights"].items():
            fig.add_trace(go.Scatter(x=list(by_step), y=list(by_step.values()), mode="lines", name=f"alpha {g}",
                                     legendgroup="weights"), row=3, col=1)
    cfg = runs[0]["config"]
    # the steps the runs actually reached (a stopped run holds fewer than its config's max_steps)
    reached = max(r["last_step"] for r in runs)
    fig.update_layout(
        title={"text": f"GR-IPO vs IPO on GlobalOpinionQA pairs ({cfg.get('dataset')}, countries as groups), "
                       f"seed {cfg.get('seed')}, {reached} steps of {cfg.get('batch_size')} pairs"
                       + (f" (of a {cfg.get('max_steps')}-step schedule)" if reached < cfg.get("max_steps", 0)
                          else ""), "x": 0},
        height=330 * n_rows, width=1100, template="plotly_white", legend={"orientation": "v"},
        margin={"l": 60, "r": 20, "t": 80, "b": 50})
    fig.update_yaxes(title_text="IPO loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=2, col=1)
    if gr:
        fig.update_yaxes(title_text="weight", row=3, col=1)
    fig.update_xaxes(title_text="training step", row=n_rows, col=1)
    return fig


def write_png(fig: Any, path: Path) -> str | None:
    """Render the figure in Chromium (Playwright) and screenshot it; returns why not, or None when written."""
    exe = next((c for c in CHROMIUM if Path(c).exists()), None) or shutil.which("chromium")
    if exe is None:
        return "no Chromium found"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "figure.html"
        fig.write_html(str(html), include_plotlyjs=True, full_html=True)  # offline: plotly.js embedded
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": int(fig.layout.width) + 40,
                                                  "height": int(fig.layout.height) + 40})
                page.goto(html.as_uri())
                page.wait_for_selector(".main-svg")
                page.locator(".plotly-graph-div").screenshot(path=str(path))
            finally:
                browser.close()
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=int, nargs="+", help="run ids (an IPO run and a GR-IPO run)")
    parser.add_argument("--db", default=None, help="database URL (default: the studio's, in $STUDIO_HOME)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-png", action="store_true", help="skip the PNG (needs Chromium and Playwright)")
    args = parser.parse_args(argv)

    from db.session import Store, default_url

    store = Store(args.db or default_url())
    try:
        runs = [load_run(store, rid) for rid in args.runs]
    finally:
        store.dispose()
    check_comparable(runs)
    rows = summary(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    fig = figure(runs)
    fig.write_html(str(args.out / "figure.html"), include_plotlyjs="cdn")
    note = "skipped (--no-png)" if args.no_png else write_png(fig, args.out / "figure.png")
    table = markdown_table(rows)
    (args.out / "table.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps(
        {"summary": rows, "runs": [{k: r[k] for k in ("id", "algorithm", "status", "config", "wall_s",
                                                     "evaluations", "weights")} for r in runs]},
        indent=1, default=str) + "\n")
    print(table)
    print(f"wrote {args.out}/figure.html, results.json, table.md"
          + (f"; PNG not written: {note}" if note else ", figure.png"))


if __name__ == "__main__":
    main()
