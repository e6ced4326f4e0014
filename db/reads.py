"""Everything the dashboard reads: runs overview, downsampled metric and group series, samples, comparisons.

Charts stay fast on long runs because downsampling happens in the database: steps are cut into at most
``max_points`` buckets of equal width and each bucket returns its last step, mean, minimum and maximum,
so a spike inside a bucket still shows in the band. Every query is dialect-neutral SQLAlchemy with bound
parameters (SQLite and PostgreSQL), and every column name that reaches a query comes from a fixed list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, func, select

from db.models import (Checkpoint, ComparisonOutput, Evaluation, Event, GroupStat, MetricPoint, Run, RunStatus, Sample,
                       utcnow)
from db.session import Store
from db.metric_keys import GROUP_FIELDS, REWARD_KEYS, STEP_TIME, WORST_GROUP_KEYS

DEFAULT_MAX_POINTS = 2000
# Metric keys that stand for "the reward" and "the worst group" in the runs table, most specific first, and the
# group fields: named in db/metric_keys.py, the contract with the runners that write them.
__all__ = ["GROUP_FIELDS", "REWARD_KEYS", "WORST_GROUP_KEYS"]


@dataclass
class Series:
    """One curve. ``lo``/``hi`` are the bucket minima/maxima (equal to ``values`` at full resolution)."""

    steps: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)
    downsampled: bool = False

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    def extend(self, other: "Series") -> None:
        """Append points after this series' last step (an incremental read)."""
        start = self.last_step
        for i, s in enumerate(other.steps):
            if start is None or s > start:
                self.steps.append(s)
                self.values.append(other.values[i])
                self.lo.append(other.lo[i])
                self.hi.append(other.hi[i])
        self.downsampled = self.downsampled or other.downsampled


def bucket_width(first_step: int, last_step: int, max_points: int) -> int:
    """Smallest integer width that cuts [first_step, last_step] into at most ``max_points`` buckets."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    span = last_step - first_step + 1
    return max(1, math.ceil(span / max_points))


def _series_rows(rows: Iterable[Any], downsampled: bool) -> dict[Any, Series]:
    out: dict[Any, Series] = {}
    for name, step, mean, lo, hi in rows:
        s = out.setdefault(name, Series(downsampled=downsampled))
        s.steps.append(int(step))
        s.values.append(None if mean is None else float(mean))
        s.lo.append(None if lo is None else float(lo))
        s.hi.append(None if hi is None else float(hi))
    return out


def _read_series(store: Store, name_col: Any, value_col: Any, step_col: Any, where: list[Any], *,
                 since_step: int | None, max_points: int | None) -> dict[Any, Series]:
    """Shared core of metric and group reads: raw rows when few enough, else min/max/mean buckets."""
    if since_step is not None:
        where = [*where, step_col > since_step]
    with store.read() as s:
        # Two queries, not one: SQLite answers a lone min() or max() from the index in O(log n), both at once by a scan.
        first = s.scalar(select(func.min(step_col)).where(*where))
        if first is None:
            return {}
        last = s.scalar(select(func.max(step_col)).where(*where))
        # The step span bounds the number of distinct steps, so a span within budget never needs buckets.
        if max_points is None or last - first + 1 <= max_points:
            rows = s.execute(select(name_col, step_col, value_col, value_col, value_col).where(*where)
                             .order_by(name_col, step_col))
            return _series_rows(rows, downsampled=False)
        width = bucket_width(first, last, max_points)
        # Floor division (`//`): SQLAlchemy renders `/` as true division, and PostgreSQL's cast of that numeric
        # to an integer rounds where SQLite's truncates, which would cut one bucket more than the budget.
        bucket = cast((step_col - first) // width, Integer).label("bucket")
        rows = s.execute(select(name_col, func.max(step_col), func.avg(value_col), func.min(value_col),
                                func.max(value_col)).where(*where).group_by(name_col, bucket)
                         .order_by(name_col, bucket))
        return _series_rows(rows, downsampled=True)


def metric_keys(store: Store, run_id: int) -> list[str]:
    """A run's metric keys by a loose index scan: one index seek per key (min(key) > previous), instead of a
    DISTINCT that reads every row of the run (a million rows on a long run)."""
    keys: list[str] = []
    with store.read() as s:
        while True:
            q = select(func.min(MetricPoint.key)).where(MetricPoint.run_id == run_id)
            if keys:
                q = q.where(MetricPoint.key > keys[-1])
            nxt = s.scalar(q)
            if nxt is None:
                return keys
            keys.append(nxt)


def metric_series(store: Store, run_id: int, keys: Sequence[str] | None = None, *, since_step: int | None = None,
                  max_points: int | None = DEFAULT_MAX_POINTS) -> dict[str, Series]:
    """Curves of a run's metrics (all keys when ``keys`` is None), only steps after ``since_step`` if given.

    ``max_points=None`` reads full resolution."""
    # An explicit key list lets (run_id, key, step) serve "steps after N" with one seek per key; without it
    # the database would read every row of the run.
    keys = metric_keys(store, run_id) if keys is None else list(keys)
    if not keys:
        return {}
    where: list[Any] = [MetricPoint.run_id == run_id, MetricPoint.key.in_(keys)]
    return _read_series(store, MetricPoint.key, MetricPoint.value, MetricPoint.step, where, since_step=since_step,
                        max_points=max_points)


def group_series(store: Store, run_id: int, field_name: str, *, since_step: int | None = None,
                 max_points: int | None = DEFAULT_MAX_POINTS) -> dict[str, Series]:
    """One per-group quantity (weight, loss, reward_mean, ...) over steps, one curve per group."""
    if field_name not in GROUP_FIELDS:
        raise ValueError(f"unknown group field {field_name!r}: use one of {', '.join(GROUP_FIELDS)}")
    col = getattr(GroupStat, field_name)
    where = [GroupStat.run_id == run_id, col.is_not(None)]
    return _read_series(store, GroupStat.group, col, GroupStat.step, where, since_step=since_step,
                        max_points=max_points)


def group_names(store: Store, run_id: int) -> list[str]:
    with store.read() as s:
        return sorted(s.scalars(select(GroupStat.group).where(GroupStat.run_id == run_id).distinct()))


# ------------------------------------------------------------------------------------------- runs table
@dataclass
class RunRow:
    id: int
    name: str
    algorithm: str
    status: str
    model: str
    last_step: int
    total_steps: int
    elapsed_s: float | None
    eta_s: float | None
    reward: float | None
    reward_key: str | None
    worst_group: float | None
    worst_group_key: str | None
    queue_position: int | None
    cancel_requested: bool
    error: str | None
    created_at: datetime
    tags: list[str] = field(default_factory=list)
    notes: str = ""


def _attempt_seconds(events: Sequence[tuple[datetime, str]], run: Run, now: datetime) -> float | None:
    """Time the run was active over all its attempts: from each claim to the last event of that attempt (how it
    ended), the current attempt up to now (or its end). Queue time between attempts is not counted."""
    from db.queue import CLAIMED_EVENT, RESUME_EVENTS

    total, start, last = 0.0, None, None
    for t, msg in events:  # in time order
        if msg.startswith(CLAIMED_EVENT):
            if start is not None and last is not None:
                total += max(0.0, (last - start).total_seconds())
            start, last = t, t
        elif start is not None and not msg.startswith(RESUME_EVENTS):
            last = t
    if start is None:
        return None
    if run.status == RunStatus.running:
        last = now
    elif run.status.finished and run.finished_at is not None and run.finished_at >= start:
        last = run.finished_at
    return total + max(0.0, ((last or start) - start).total_seconds())


def _elapsed(run: Run, now: datetime, events: Sequence[tuple[datetime, str]] | None = None) -> float | None:
    if run.started_at is None:
        return None
    if events:  # a resumed run: every attempt counts, the time it waited in the queue does not
        got = _attempt_seconds(events, run, now)
        if got is not None:
            return got
    end = run.finished_at if run.status.finished and run.finished_at else now
    return max(0.0, (end - run.started_at).total_seconds())


@dataclass
class StepTiming:
    """How long a step of a running run takes, measured from its own steps (setup excluded)."""

    step_s: float  # seconds per training step
    last_write: datetime  # when its latest step was written


def _eta(run: Run, timing: StepTiming | None, now: datetime) -> float | None:
    """Steps left times the measured step time, less the time the current step has already run. Setup before
    the first step is not a step and is not counted; within a step the estimate goes down, never up (at most it
    stays at the steps after the current one while a step runs longer than usual)."""
    if run.status != RunStatus.running or timing is None or run.last_step <= 0:
        return None
    left = max(0, run.total_steps - run.last_step)
    if left == 0:
        return 0.0
    into_step = max(0.0, (now - timing.last_write).total_seconds())
    return max((left - 1) * timing.step_s, left * timing.step_s - into_step)


def _step_timings(s: Any, runs: Sequence[Run]) -> dict[int, StepTiming]:
    """Measured step time of each running run: the mean of its recent ``time/step`` metrics (the step's own
    phase timer), else the span between its step writes in this attempt."""
    out: dict[int, StepTiming] = {}
    for r in runs:
        if r.status != RunStatus.running or r.last_step <= 0:
            continue
        last_write = s.scalar(select(func.max(MetricPoint.time)).where(MetricPoint.run_id == r.id,
                                                                         MetricPoint.step == r.last_step))
        if last_write is None:
            continue
        step_s = s.scalar(select(func.avg(MetricPoint.value)).where(
            MetricPoint.run_id == r.id, MetricPoint.key == STEP_TIME, MetricPoint.step > r.last_step - 10))
        if step_s is None and r.started_at is not None:
            # no phase timer (the synthetic experiment): steps written since this attempt's first one
            first = s.scalar(select(func.min(MetricPoint.step)).where(MetricPoint.run_id == r.id,
                                                                      MetricPoint.time >= r.started_at))
            if first is not None and r.last_step > first:
                t0 = s.scalar(select(func.min(MetricPoint.time)).where(MetricPoint.run_id == r.id,
                                                                       MetricPoint.step == first))
                step_s = max(0.0, (last_write - t0).total_seconds()) / (r.last_step - first)
        if step_s is not None:
            out[r.id] = StepTiming(float(step_s), last_write)
    return out


def _model_of(config_json: str) -> str:
    import json

    try:
        cfg = json.loads(config_json)
    except ValueError:
        return "?"
    if "model_a" in cfg:
        return f"{cfg.get('model_a')} vs {cfg.get('model_b')}"
    return str(cfg.get("model", "-" if cfg.get("algorithm") == "synthetic" else "?"))


def _pick(values: dict[str, float | None], keys: Sequence[str]) -> tuple[str | None, float | None]:
    for k in keys:
        if k in values:
            return k, values[k]
    return None, None


def runs_overview(store: Store, now: datetime | None = None) -> list[RunRow]:
    """Every run, newest first, with progress, timing, its latest reward and worst-group metric."""
    now = now or utcnow()
    keys = [*REWARD_KEYS, *WORST_GROUP_KEYS]
    with store.read() as s:
        runs = list(s.scalars(select(Run).order_by(Run.id.desc())))
        latest = s.execute(select(MetricPoint.run_id, MetricPoint.key, MetricPoint.value)
                           .join(Run, and_(Run.id == MetricPoint.run_id, Run.last_step == MetricPoint.step))
                           .where(MetricPoint.key.in_(keys))).all()
        queued = list(s.scalars(select(Run.id).where(Run.status == RunStatus.queued).order_by(Run.priority, Run.id)))
        timings = _step_timings(s, runs)
        # runs that ran before (resumed, or handed back to the queue): their elapsed time sums the attempts
        resumed = [r.id for r in runs if r.attempts > 1 or (r.attempts and r.status == RunStatus.queued)]
        attempt_events: dict[int, list[tuple[datetime, str]]] = {}
        if resumed:
            for rid, t, msg in s.execute(select(Event.run_id, Event.time, Event.message)
                                         .where(Event.run_id.in_(resumed)).order_by(Event.id)):
                attempt_events.setdefault(rid, []).append((t, msg))
    by_run: dict[int, dict[str, float | None]] = {}
    for run_id, key, value in latest:
        by_run.setdefault(run_id, {})[key] = value
    position = {rid: i + 1 for i, rid in enumerate(queued)}
    out = []
    for r in runs:
        vals = by_run.get(r.id, {})
        rk, rv = _pick(vals, REWARD_KEYS)
        wk, wv = _pick(vals, WORST_GROUP_KEYS)
        elapsed = _elapsed(r, now, attempt_events.get(r.id))
        out.append(RunRow(id=r.id, name=r.name, algorithm=r.algorithm, status=r.status.value,
                          model=_model_of(r.config_json), last_step=r.last_step, total_steps=r.total_steps,
                          elapsed_s=elapsed, eta_s=_eta(r, timings.get(r.id), now), reward=rv, reward_key=rk,
                          worst_group=wv, worst_group_key=wk, queue_position=position.get(r.id), cancel_requested=r.cancel_requested,
                          error=r.error, created_at=r.created_at, tags=list(r.tags or []), notes=r.notes or ""))
    return out


def search_runs(rows: Sequence[RunRow], query: str = "", tags: Sequence[str] = ()) -> list[RunRow]:
    """The runs with every one of ``tags`` whose name, tags, notes, algorithm, model, status or "#id" contain
    every word of ``query`` (case-insensitive)."""
    words = query.lower().split()
    want = {t.lower() for t in tags}
    out = []
    for r in rows:
        have = {t.lower() for t in r.tags}
        if not want <= have:
            continue
        text = " ".join([f"#{r.id}", r.name, r.algorithm, r.model, r.status, r.notes, *r.tags]).lower()
        if all(w in text for w in words):
            out.append(r)
    return out


# ------------------------------------------------------------------------------------- estimate before queueing
# Config fields that decide how long a step takes: runs agreeing on all of them (that they have) are "similar".
SHAPE_FIELDS = ("algorithm", "model", "sampler", "prompts_per_step", "group_size", "max_new_tokens", "batch_size",
                "max_length", "micro_batch_size", "use_lora", "num_iterations", "eval_prompts", "eval_every",
                "method", "setting", "n_train", "n_val")


def run_shape(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config.get(k) for k in SHAPE_FIELDS if k in config}


@dataclass
class TimeEstimate:
    runs: list[int]  # the similar runs it was measured on
    step_s: float  # median seconds per step
    setup_s: float | None  # median seconds from the claim to the first step (model loading, sampler, baseline)
    exact: bool  # True when the runs share every shape field; False: same algorithm and model only

    def total_s(self, steps: int) -> float:
        return (self.setup_s or 0.0) + self.step_s * steps


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def time_estimate(store: Store, config: dict[str, Any], limit: int = 20) -> TimeEstimate | None:
    """How long a run of ``config`` would take on this studio's engine, from the measured step time of similar
    runs that finished here (completed or cancelled after at least one step); None when there is none."""
    import json

    want = run_shape(config)
    with store.read() as s:
        cands = list(s.scalars(select(Run).where(Run.algorithm == config.get("algorithm"),
                                                 Run.status.in_((RunStatus.completed, RunStatus.cancelled)),
                                                 Run.last_step > 0).order_by(Run.id.desc()).limit(200)))
        exact, loose = [], []
        for r in cands:
            try:
                shape = run_shape(json.loads(r.config_json))
            except ValueError:
                continue
            if shape == want:
                exact.append(r)
            elif shape.get("model") == want.get("model"):
                loose.append(r)
        chosen, is_exact = (exact, True) if exact else (loose, False)
        step_times: list[float] = []
        setups: list[float] = []
        used = []
        for r in chosen[:limit]:
            step_s = s.scalar(select(func.avg(MetricPoint.value)).where(MetricPoint.run_id == r.id,
                                                                         MetricPoint.key == STEP_TIME))
            first = s.scalar(select(func.min(MetricPoint.time)).where(MetricPoint.run_id == r.id,
                                                                      MetricPoint.step == 1))
            if step_s is None:  # no phase timer: the span of its step writes
                last = s.scalar(select(func.max(MetricPoint.time)).where(MetricPoint.run_id == r.id,
                                                                         MetricPoint.step == r.last_step))
                if first is None or last is None or r.last_step < 2 or r.attempts != 1:
                    continue
                step_s = max(0.0, (last - first).total_seconds()) / (r.last_step - 1)
            step_times.append(float(step_s))
            used.append(r.id)
            if r.attempts == 1 and first is not None and r.started_at is not None:
                setups.append(max(0.0, (first - r.started_at).total_seconds() - float(step_s)))
    if not step_times:
        return None
    return TimeEstimate(used, _median(step_times), _median(setups) if setups else None, is_exact)


# ------------------------------------------------------------------------------------- samples, events
@dataclass
class SampleRow:
    step: int
    group: str
    prompt: str
    completion: str
    reward: float | None
    rewards: dict[str, Any] | None
    advantage: float | None


def sample_steps(store: Store, run_id: int) -> list[int]:
    with store.read() as s:
        return list(s.scalars(select(Sample.step).where(Sample.run_id == run_id).distinct().order_by(Sample.step)))


def samples(store: Store, run_id: int, *, groups: Sequence[str] | None = None, step_min: int | None = None,
            step_max: int | None = None, limit: int = 500) -> list[SampleRow]:
    """Logged completions, newest steps first, filtered by group and step range."""
    q = select(Sample).where(Sample.run_id == run_id)
    if groups:
        q = q.where(Sample.group.in_(list(groups)))
    if step_min is not None:
        q = q.where(Sample.step >= step_min)
    if step_max is not None:
        q = q.where(Sample.step <= step_max)
    with store.read() as s:
        rows = s.scalars(q.order_by(Sample.step.desc(), Sample.id).limit(limit))
        return [SampleRow(step=x.step, group=x.group, prompt=x.prompt, completion=x.completion, reward=x.reward,
                          rewards=x.rewards, advantage=x.advantage) for x in rows]


def sample_groups(store: Store, run_id: int) -> list[str]:
    with store.read() as s:
        return sorted(s.scalars(select(Sample.group).where(Sample.run_id == run_id).distinct()))


def last_metric_time(store: Store, run_id: int) -> datetime | None:
    """When the run last wrote a step (None before its first)."""
    with store.read() as s:
        return s.scalar(select(func.max(MetricPoint.time)).where(MetricPoint.run_id == run_id))


def run_events(store: Store, run_id: int, limit: int = 200) -> list[Event]:
    with store.read() as s:
        return list(s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id.desc()).limit(limit)))


def checkpoints(store: Store, run_id: int) -> list[Checkpoint]:
    with store.read() as s:
        return list(s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step.desc())))


def runs_with_checkpoints(store: Store) -> list[tuple[int, str, int]]:
    """(run id, name, latest checkpoint step) of training runs that have a checkpoint: the choices for compare."""
    with store.read() as s:
        rows = s.execute(select(Run.id, Run.name, func.max(Checkpoint.step))
                         .join(Checkpoint, Checkpoint.run_id == Run.id)
                         .where(Run.algorithm.not_in(("compare", "eval", "synthetic")))
                         .group_by(Run.id, Run.name).order_by(Run.id.desc())).all()
    return [(int(a), str(b), int(c)) for a, b, c in rows]


# ------------------------------------------------------------------------------------------- comparison
@dataclass
class ComparisonRow:
    prompt_index: int
    group: str
    prompt: str
    model_a: str
    completion_a: str | None
    reward_a: float | None
    model_b: str
    completion_b: str | None
    reward_b: float | None

    @property
    def diff(self) -> float | None:
        """b minus a: positive when the second model's answer is scored less biased."""
        if self.reward_a is None or self.reward_b is None:
            return None
        return self.reward_b - self.reward_a


def comparison(store: Store, run_id: int) -> list[ComparisonRow]:
    """A compare job's answers paired per prompt, ordered by group then prompt."""
    with store.read() as s:
        outs = list(s.scalars(select(ComparisonOutput).where(ComparisonOutput.run_id == run_id)
                              .order_by(ComparisonOutput.group, ComparisonOutput.prompt_index)))
    pairs: dict[int, ComparisonRow] = {}
    for o in outs:
        row = pairs.setdefault(o.prompt_index, ComparisonRow(o.prompt_index, o.group, o.prompt, "", None, None, "",
                                                             None, None))
        if o.side == "a":
            row.model_a, row.completion_a, row.reward_a = o.model, o.completion, o.reward
        else:
            row.model_b, row.completion_b, row.reward_b = o.model, o.completion, o.reward
    return sorted(pairs.values(), key=lambda r: (r.group, r.prompt_index))


@dataclass
class GroupSummary:
    group: str
    n: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    b_better: int  # prompts where b's answer scored higher


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def comparison_summary(rows: Sequence[ComparisonRow]) -> list[GroupSummary]:
    """Per group: mean reward of each side, mean difference (b - a) and how often b was better."""
    by_group: dict[str, list[ComparisonRow]] = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    out = []
    for g in sorted(by_group):
        rs = by_group[g]
        a = [r.reward_a for r in rs if r.reward_a is not None]
        b = [r.reward_b for r in rs if r.reward_b is not None]
        d = [r.diff for r in rs if r.diff is not None]
        out.append(GroupSummary(g, len(rs), _mean(a), _mean(b), _mean(d), sum(1 for x in d if x > 0)))
    return out


# ------------------------------------------------------------------------------------------ evaluations
def evaluations(store: Store, run_id: int | None = None) -> list[Evaluation]:
    q = select(Evaluation).order_by(Evaluation.id)
    if run_id is not None:
        q = q.where(Evaluation.run_id == run_id)
    with store.read() as s:
        return list(s.scalars(q))


def runs_by_algorithm(store: Store, algorithms: Sequence[str]) -> list[Run]:
    with store.read() as s:
        return list(s.scalars(select(Run).where(Run.algorithm.in_(list(algorithms))).order_by(Run.id.desc())))


def overlay_series(store: Store, run_ids: Sequence[int], key: str,
                   max_points: int | None = DEFAULT_MAX_POINTS) -> dict[int, Series]:
    """One metric across several runs, for the overlay chart."""
    out = {}
    for rid in run_ids:
        got = metric_series(store, rid, [key], max_points=max_points)
        if key in got:
            out[rid] = got[key]
    return out


def common_metric_keys(store: Store, run_ids: Sequence[int]) -> list[str]:
    """Metric keys that every one of the given runs wrote."""
    if not run_ids:
        return []
    with store.read() as s:
        rows = s.execute(select(MetricPoint.key).where(MetricPoint.run_id.in_(list(run_ids)))
                         .group_by(MetricPoint.key)
                         .having(func.count(func.distinct(MetricPoint.run_id)) == len(set(run_ids)))
                         .order_by(MetricPoint.key))
        return [k for (k,) in rows]
