"""The studio's named presets: the example configs in examples/ that the New run page offers by name.

They are the same files `studio submit examples/NAME.json` takes and tests validate, so a preset in the browser and
on the command line can never drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class Preset:
    key: str  # file stem, e.g. "biasgrpo_cpu"
    label: str  # the config's "name", e.g. "BiasGRPO, 2-core CPU (about an hour)"
    algorithm: str
    path: Path


def bundled_presets(folder: Path = EXAMPLES_DIR) -> list[Preset]:
    """Every readable example config, sorted by algorithm then label; unreadable files are skipped (the tests
    check that every shipped example validates)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("algorithm"), str):
            out.append(Preset(path.stem, str(data.get("name") or path.stem), data["algorithm"], path))
    return sorted(out, key=lambda p: (p.algorithm, p.label))
