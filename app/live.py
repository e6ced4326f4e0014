"""The run page's chart data, kept in the browser session and grown by reading only the steps after the last one seen.

A full (downsampled) read happens once; each refresh then asks for ``step > last_step``. When the cache
holds more than twice the point budget it is re-read downsampled, so a page left open on a long run stays
light. A resumed run rewrites steps after its checkpoint, which shows up as ``run.last_step`` going
backwards: then the cache starts over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.widgets import fmt_duration
from db.models import utcnow
from db.reads import DEFAULT_MAX_POINTS, Series, group_series, metric_series
from db.session import Store
from db.metric_keys import CHART_GROUP_FIELDS  # what the run page charts (count is shown nowhere)

__all__ = ["CHART_GROUP_FIELDS", "ChartCache", "refresh", "setup_status"]

SETUP_EVENT, SETUP_DONE_EVENT = "setup: ", "setup done"


@dataclass
class ChartCache:
    run_id: int
    full_resolution: bool
    last_step: int | None = None
    metrics: dict[str, Series] = field(default_factory=dict)
    groups: dict[str, dict[str, Series]] = field(default_factory=dict)
    reads: int = 0  # how many refreshes hit the store (tests check that refreshes stay incremental)
    full_reads: int = 0

    @property
    def max_points(self) -> int | None:
        return None if self.full_resolution else DEFAULT_MAX_POINTS

    def size(self) -> int:
        return max([len(s) for s in self.metrics.values()] +
                   [len(s) for g in self.groups.values() for s in g.values()] + [0])


def _merge(into: dict[str, Series], new: dict[str, Series]) -> None:
    for k, s in new.items():
        if k in into:
            into[k].extend(s)
        else:
            into[k] = s


def refresh(store: Store, cache: ChartCache, run_last_step: int) -> ChartCache:
    """Bring the cache up to date with the store; returns the cache (a fresh one when it had to start over)."""
    if cache.last_step is not None and (run_last_step < cache.last_step or
                                        (cache.max_points and cache.size() > 2 * cache.max_points)):
        cache = ChartCache(cache.run_id, cache.full_resolution, reads=cache.reads, full_reads=cache.full_reads)
    since = cache.last_step
    if since is None:
        cache.full_reads += 1
    cache.reads += 1
    new_metrics = metric_series(store, cache.run_id, None, since_step=since, max_points=cache.max_points)
    _merge(cache.metrics, new_metrics)
    newest = [s.last_step for s in new_metrics.values() if s.last_step is not None]
    for f in CHART_GROUP_FIELDS:
        new_groups = group_series(store, cache.run_id, f, since_step=since, max_points=cache.max_points)
        _merge(cache.groups.setdefault(f, {}), new_groups)
        newest += [s.last_step for s in new_groups.values() if s.last_step is not None]
    if newest:
        # The smallest "newest" step: a step still being read by one query is re-read (and deduplicated) next time.
        cache.last_step = min(newest) if since is None else max(since, min(newest))
    return cache


def setup_status(events_newest_first: Sequence[Any], run: Any, now: datetime | None = None,
                 last_step_written: datetime | None = None) -> str | None:
    """What a running run is doing before its first step of this attempt (model conversion, sampler start,
    the baseline evaluation: minutes on a CPU), from the setup events its runner writes; None once it trains
    (a "setup done" event, or a step written since the engine took the run)."""
    from db.queue import CLAIMED_EVENT

    if getattr(run.status, "value", run.status) != "running":
        return None
    latest_setup = None
    for e in events_newest_first:
        if e.message.startswith(SETUP_DONE_EVENT):
            return None
        if latest_setup is None and e.message.startswith(SETUP_EVENT):
            latest_setup = e
        if e.message.startswith(CLAIMED_EVENT):
            since = e.time
            break
    else:
        return None
    if last_step_written is not None and last_step_written >= since:
        return None
    now = now or utcnow()
    so_far = fmt_duration((now - since).total_seconds())
    if latest_setup is None:
        return f"Starting the run ({so_far} so far): the engine took it and is preparing its first step."
    doing = latest_setup.message[len(SETUP_EVENT):]
    return (f"Setting up ({so_far} so far), before the first training step: {doing}. The ETA counts training "
            "steps only and appears after the first one.")
