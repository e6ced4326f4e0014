"""Small display helpers shared by the pages: durations, status badges, the engine health banner."""

from __future__ import annotations

import streamlit as st

from db.queue import live_workers
from db.session import Store

# Material icons render everywhere; emoji need a colour-emoji font that servers often lack.
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/play_circle:",
                "completed": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}
STATUS_COLOURS = {"queued": "gray", "running": "blue", "completed": "green", "failed": "red", "cancelled": "orange"}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def fmt_value(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def status_badge(status: str) -> str:
    return f":{STATUS_COLOURS.get(status, 'gray')}[{STATUS_ICONS.get(status, '')} {status}]"


def engine_banner(store: Store, needed: bool) -> None:
    """Warn when runs wait in the queue but no engine is alive to take them."""
    if needed and not live_workers(store):
        st.warning("No engine is running, so queued runs wait. Start the studio with `studio up` (engine and app "
                   "together) or run `studio engine` in another terminal.", icon=":material/warning:")
