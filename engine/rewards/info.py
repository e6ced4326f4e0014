"""What the active bias reward measures: its model card and `studio reward check` table, for the web app.

Torch-free and model-free: it reads the card (README.md) and the check's validation.json of the shipped model
(engine/rewards/shipped/) or of a bias_rm `path` folder, and says when the table was measured on other weights
than the ones that would now be loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.hashing import sha256_file

VALIDATION_FILE = "validation.json"  # what engine.rewards.check writes next to the card
TITLES = {"reward_model": "bias_rm alone", "default_grpo": "default GRPO reward"}


@dataclass
class RewardModelInfo:
    label: str  # what the user sees as the model's name
    shipped: bool
    card: str | None  # the model card's markdown; None when the folder has none
    validation: dict[str, Any] | None  # the check report; None when the model was never checked
    stale: bool = False  # the report measured other weights than the ones in the folder now
    notes: list[str] = field(default_factory=list)


def _read_json(file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(file: Path) -> str | None:
    if not file.is_file():
        return None
    return sha256_file(file)


def reward_model_info(path: str | None = None) -> RewardModelInfo:
    """The card and check report of the bias reward model a run would load (path None: the shipped one)."""
    from engine.rewards.bias_model import SHIPPED_DIR, read_manifest

    if path is None:
        manifest = read_manifest()
        report = _read_json(SHIPPED_DIR / VALIDATION_FILE)
        card = SHIPPED_DIR / "README.md"
        stale = report is not None and report.get("trained_sha256") != manifest["trained_sha256"]
        info = RewardModelInfo(manifest["name"], True, card.read_text(encoding="utf-8") if card.is_file() else None,
                               report, stale)
    else:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            return RewardModelInfo(path, False, None, None, notes=[f"{path} is not a model folder on this machine "
                                                                   "(a hub id is loaded only by the engine)"])
        report = _read_json(folder / VALIDATION_FILE)
        card = folder / "README.md"
        stale = report is not None and report.get("model_sha256") != _sha256(folder / "model.safetensors")
        info = RewardModelInfo(str(folder), False, card.read_text(encoding="utf-8") if card.is_file() else None,
                               report, stale)
    if info.validation is None:
        info.notes.append("not validated yet: run `studio reward check" + ("" if path is None else f" {path}") + "`")
    elif info.stale:
        info.notes.append("the validation table was measured on other weights than the ones now in place: rerun "
                          "`studio reward check" + ("" if path is None else f" {path}") + "`")
    return info


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def validation_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The check's rows as table rows: one per (reward, part, kind), strings ready to show."""
    out = []
    for key, res in (report.get("results") or {}).items():
        for r in res.get("rows", []):
            ci = r.get("ci95")
            target = r.get("target")
            out.append({
                "reward": TITLES.get(key, key), "part": f"({r.get('part')})", "kind": str(r.get("name")),
                "n": str(r.get("n")), "value": f"{_fmt(r.get('value'))} {r.get('metric', '')}".strip(),
                "95% CI": f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a",
                "target": f">= {target:.2f}" if isinstance(target, (int, float)) else "-",
                "result": "-" if r.get("pass") is None else ("pass" if r["pass"] else "SHORT"),
            })
    return out


def card_summary(card: str) -> str:
    """The card without its YAML header (what a reader wants first)."""
    if card.startswith("---"):
        end = card.find("\n---", 3)
        if end != -1:
            return card[end + 4:].lstrip("\n")
    return card
