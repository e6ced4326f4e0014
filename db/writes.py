"""What a run process writes: one short transaction per training step, plus checkpoints and evaluations.

A run process passes its claim's ``lease``: each transaction then starts with the lease check
(``db.queue.check_lease``) and writes nothing, raising ``LeaseLost``, once the run is no longer its own.
Callers that are not run processes (tests, tools) leave it out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, insert

from db.models import Checkpoint, ComparisonOutput, Evaluation, GroupStat, MetricPoint, Sample, utcnow
from db.queue import add_event, check_lease
from db.session import Store
from db.metric_keys import GROUP_COUNT
from db.metric_keys import GROUP_FIELDS as _GROUP_FIELDS


def _clean(v: Any) -> float | None:
    """NaN and inf become NULL: JSON and PostgreSQL both reject them, and a gap in a chart is the honest picture."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def write_step(store: Store, run_id: int, step: int, metrics: Mapping[str, float],
               groups: Iterable[Mapping[str, Any]] = (), samples: Iterable[Mapping[str, Any]] = (), *,
               lease: str | None = None) -> None:
    """Everything one step produced, in one transaction: a crash leaves either the whole step or none of it."""
    now = utcnow()
    metric_rows = [{"run_id": run_id, "step": step, "key": k, "value": _clean(v), "time": now} for k, v in metrics.items()]
    group_rows = []
    for g in groups:
        row = {"run_id": run_id, "step": step, "group": str(g["group"])}
        row.update({f: (_clean(g.get(f)) if f != GROUP_COUNT else g.get(f)) for f in _GROUP_FIELDS})
        extra = {k: _clean(v) for k, v in g.items() if k not in _GROUP_FIELDS and k != "group"}
        row["extra"] = extra or None
        group_rows.append(row)
    sample_rows = [{"run_id": run_id, "step": step, "group": str(x.get("group", "")), "prompt": x["prompt"],
                    "completion": x["completion"], "reward": _clean(x.get("reward")),
                    "rewards": {k: _clean(v) for k, v in (x.get("rewards") or {}).items()} or None,
                    "advantage": _clean(x.get("advantage"))} for x in samples]
    with store.write() as s:
        check_lease(s, run_id, lease, last_step=step, heartbeat_at=now)
        if metric_rows:
            s.execute(insert(MetricPoint), metric_rows)
        if group_rows:
            s.execute(insert(GroupStat), group_rows)
        if sample_rows:
            s.execute(insert(Sample), sample_rows)


def truncate_after(store: Store, run_id: int, step: int, *, lease: str | None = None) -> None:
    """Drop what a run wrote after ``step``: a resumed run rewrites those steps from its checkpoint."""
    with store.write() as s:
        check_lease(s, run_id, lease, last_step=step)
        for table in (MetricPoint, GroupStat, Sample):
            s.execute(delete(table).where(table.run_id == run_id, table.step > step))
        s.execute(delete(Evaluation).where(Evaluation.run_id == run_id, Evaluation.step > step))
        s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step > step))


def record_checkpoint(store: Store, run_id: int, step: int, path: str, meta: Mapping[str, Any] | None = None, *,
                      lease: str | None = None) -> None:
    with store.write() as s:
        check_lease(s, run_id, lease)
        s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step == step))
        s.add(Checkpoint(run_id=run_id, step=step, path=path, meta=dict(meta or {})))
        add_event(s, run_id, f"checkpoint saved at step {step}")


def record_evaluation(store: Store, *, run_id: int | None, model: str, benchmark: str, dataset_version: str,
                      metrics: Mapping[str, Any], seed: int = 0, step: int | None = None,
                      checkpoint: str | None = None, lease: str | None = None, evaluated_model: str | None = None,
                      evaluated_run_id: int | None = None, evaluated_step: int | None = None,
                      model_path: str | None = None, source: str | None = None) -> int:
    """One evaluation result. ``run_id`` owns the row (lease, deletion with the run); the ``evaluated_*`` fields
    say what was evaluated: the base model id, the run and checkpoint step whose weights were scored (none for a
    base model), the folder loaded, and ``source`` ("run": a training run's own held-out evaluation, "job": a
    queued eval job, "cli": `studio eval`)."""
    clean = {k: (_clean(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in metrics.items()}
    with store.write() as s:
        if run_id is not None:
            check_lease(s, run_id, lease)
        ev = Evaluation(run_id=run_id, step=step, model=model, checkpoint=checkpoint, benchmark=benchmark,
                        dataset_version=dataset_version, seed=seed, metrics=clean, evaluated_model=evaluated_model,
                        evaluated_run_id=evaluated_run_id, evaluated_step=evaluated_step, model_path=model_path,
                        source=source)
        s.add(ev)
        s.flush()
        return ev.id


def write_comparison(store: Store, run_id: int, rows: Iterable[Mapping[str, Any]], *, lease: str | None = None) -> None:
    rows = [{"run_id": run_id, "prompt_index": r["prompt_index"], "group": r["group"], "prompt": r["prompt"],
             "side": r["side"], "model": r["model"], "completion": r["completion"], "reward": _clean(r.get("reward"))}
            for r in rows]
    with store.write() as s:
        check_lease(s, run_id, lease)
        s.execute(delete(ComparisonOutput).where(ComparisonOutput.run_id == run_id))
        if rows:
            s.execute(insert(ComparisonOutput), rows)
