"""Helpers for the app's AppTest tests: open a page of the real entry script, seed a store with runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from db.writes import write_comparison, write_step
from engine.config import parse_config
from engine.submission import submit_run

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


def open_page(page: str | None = None, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=timeout).run()
    if page:
        at.switch_page(page).run()
    return at


def texts(at: AppTest) -> str:
    """Every markdown / caption / alert text on the page, for 'does the user see X' checks."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader", "text"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def shown_text(markdown: str, *, keep_invisible: bool = False) -> str:
    """What a reader sees of a markdown string: rendered by a CommonMark renderer (markdown-it-py, with GFM
    tables and strikethrough), tags dropped, line breaks kept. Invisible word joiners are dropped and no-break
    spaces read as spaces unless ``keep_invisible``."""
    import html

    from markdown_it import MarkdownIt

    # Streamlit rewrites :material/ to :material_ in the source before parsing.
    out = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(
        str(markdown).replace(":material/", ":material_"))
    out = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>\n?", "\n", out))).strip("\n")
    return out if keep_invisible else out.replace("\u2060", "").replace("\xa0", " ")


def seed_synthetic(store, steps: int = 20, groups=("gender", "race")) -> int:
    rid = submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 50, "name": "synth"}))
    for step in range(1, steps + 1):
        write_step(store, rid, step,
                   {"train/loss": 1 / step, "val/worst_group_loss": 2 / step, "val/avg_loss": 1.5 / step,
                    "kl": 0.01 * step, "custom/thing": float(step)},
                   [{"group": g, "weight": 0.5 + (i - 0.5) * step / 100, "loss": 0.3 + i, "reward_mean": 0.5 + i / 10,
                     "reward_std": 0.1, "accuracy": 0.7} for i, g in enumerate(groups)],
                   [{"group": g, "prompt": f"prompt {step}", "completion": f"answer {g} {step}", "reward": 0.5,
                     "advantage": 0.1, "rewards": {"bias_rm": 0.5}} for g in groups])
    return rid


def seed_comparison(store) -> int:
    rid = submit_run(store, parse_config({"algorithm": "compare", "name": "base vs tuned"}))
    rows = []
    for i, g in enumerate(["gender", "race", "gender"]):
        for side, model, reward in (("a", "embedded:smollm2-135m-instruct", 0.25), ("b", "run:1", 0.75)):
            rows.append({"prompt_index": i, "group": g, "prompt": f"Tell me about person {i}", "side": side,
                         "model": model, "completion": f"answer-{side}-{i}", "reward": reward})
    write_comparison(store, rid, rows)
    return rid


def chart_specs(at: AppTest) -> dict[str, dict]:
    """Plotly figure specs on the page, by title."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out
