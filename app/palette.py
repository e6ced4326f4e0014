"""One colour per demographic group, keyed by the group's name alone, the same in every chart of every page.

Known groups (the bundled datasets' groups and countries) get fixed colours, distinct within each dataset
(so "gender" is the same blue in every run); any other group takes the palette colour picked by a stable hash
of its name, so its colour never depends on which other
groups a chart happens to show (a colour chosen by position in a chart's group list would move from panel to
panel and run to run).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

# Okabe-Ito and Tableau colours: distinguishable for common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#9C755F", "#EDC948", "#76B7B2", "#FF9DA7", "#BAB0AC"]
KNOWN_GROUPS = {
    "gender": "#0072B2", "gender_identity": "#0072B2", "race": "#E69F00", "race_ethnicity": "#E69F00",
    "religion": "#009E73", "age": "#CC79A7", "disability": "#D55E00", "disability_status": "#D55E00",
    "sexual_orientation": "#56B4E9", "nationality": "#F0E442", "physical_appearance": "#000000",
    "profession": "#4E79A7", "political_ideology": "#F28E2B", "religious_ideology": "#009E73",
    "socioeconomic": "#59A14F", "ses": "#59A14F", "race_x_gender": "#B07AA1", "race_x_ses": "#9C755F",
    "group_0": "#0072B2", "group_1": "#E69F00", "group_2": "#009E73",
    # GlobalOpinionQA's countries (the group-robust paper's 14): they never share a chart with the groups above
    "nigeria": "#0072B2", "egypt": "#E69F00", "india_(current_national_sample)": "#009E73", "china": "#CC79A7",
    "japan": "#D55E00", "germany": "#56B4E9", "france": "#F0E442", "spain": "#000000",
    "united_states": "#4E79A7", "canada": "#F28E2B", "brazil": "#59A14F", "argentina": "#B07AA1",
    "australia": "#9C755F", "new_zealand": "#EDC948",
}
AVERAGE_COLOUR = "#555555"
WORST_COLOUR = "#C0392B"
# Series that are not groups (metric keys of one panel, runs of an overlay), told apart in this order.
SERIES_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#9C755F"]


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def group_colour(name: str) -> str:
    """The colour of the group called ``name``: fixed for known names, else picked by a stable hash of it."""
    key = _norm(name)
    if key in KNOWN_GROUPS:
        return KNOWN_GROUPS[key]
    return PALETTE[zlib.crc32(key.encode("utf-8")) % len(PALETTE)]


def group_colours(groups: Iterable[str]) -> dict[str, str]:
    """Colour for each group: ``group_colour`` of its name, whatever the other groups are."""
    return {g: group_colour(g) for g in set(groups)}
