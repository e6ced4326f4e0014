"""One colour per demographic group, the same in every chart.

Known groups get fixed colours (so "gender" is the same blue in every run); other groups take colours
from the rest of the palette in sorted-name order, which is stable for a run without hashing.
"""

from __future__ import annotations

from collections.abc import Iterable

# Okabe-Ito and Tableau colours: distinguishable for common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#9C755F", "#EDC948", "#76B7B2", "#FF9DA7", "#BAB0AC"]
KNOWN_GROUPS = {
    "gender": "#0072B2", "race": "#E69F00", "race_ethnicity": "#E69F00", "religion": "#009E73",
    "age": "#CC79A7", "disability": "#D55E00", "disability_status": "#D55E00", "sexual_orientation": "#56B4E9",
    "nationality": "#F0E442", "physical_appearance": "#000000", "profession": "#4E79A7",
    "political_ideology": "#F28E2B", "religious_ideology": "#009E73", "socioeconomic": "#59A14F",
    "group_0": "#0072B2", "group_1": "#E69F00", "group_2": "#009E73",
}
AVERAGE_COLOUR = "#555555"
WORST_COLOUR = "#C0392B"


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def group_colours(groups: Iterable[str]) -> dict[str, str]:
    """Colour for each group: fixed for known names, then unused palette colours in sorted order."""
    names = sorted(set(groups))
    out = {g: KNOWN_GROUPS[_norm(g)] for g in names if _norm(g) in KNOWN_GROUPS}
    free = [c for c in PALETTE if c not in out.values()] or PALETTE
    i = 0
    for g in names:
        if g not in out:
            out[g] = free[i % len(free)]
            i += 1
    return out
