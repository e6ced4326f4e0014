"""What a run process hands to an algorithm's step loop: its config, the store, stop signals, checkpoint paths.

The contract for every runner (engine/runs/*.py, ``execute(ctx)``):
  start = ctx.start_step()                       # 0, or the step of the checkpoint a resumed run restarts from
  for step in range(start + 1, ctx.config.max_steps + 1):
      ... one step ...
      ctx.log_step(step, metrics, groups, samples)   # one transaction
      if ctx.checkpoint_due(step): save, then ctx.record_checkpoint(step, path)
      if ctx.should_stop(): save a checkpoint if the step has none, then return
A runner returns normally when it finishes or stops; the run process decides the final status from
``ctx.stop_reason``. Exceptions mark the run failed.

A run process's context carries its claim's lease: every write below checks it (``db.queue.LeaseLost`` once the
run is no longer this process's), and so does ``checkpoint_dir`` before any checkpoint file is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from db import queue, writes
from db.session import Store
from db.paths import run_folder

StopReason = Literal["cancel", "shutdown"]


class RunContext:
    def __init__(self, store: Store, run_id: int, config: Any, *, resume: bool, worker_id: str | None = None,
                 cancel_poll_s: float = 1.0, lease: str | None = None):
        self.store = store
        self.run_id = run_id
        self.config = config
        self.worker_id = worker_id
        self.lease = lease
        self.resume = resume
        self.stop_reason: StopReason | None = None
        self._shutdown = False
        self._cancel_poll_s = cancel_poll_s
        self._last_cancel_poll = 0.0
        run = queue.get_run(store, run_id)
        self.run_dir = run_folder(run_id, run.folder_token)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._resume_checkpoint = queue.latest_checkpoint(store, run_id) if resume else None
        self._started = time.monotonic()
        self._run_name = run.name
        self.trackers: Any = None  # engine.runs.trackers.Mirror, from start_trackers

    # --- trackers (engine/runs/trackers.py): a mirror of what log_step stores; never fails the run -------------
    def start_trackers(self) -> None:
        """Start the config's trackers (none: nothing happens). Each one's start, or its failure, is an event."""
        names = list(getattr(self.config, "trackers", None) or ())
        if not names or self.trackers is not None:
            return
        from engine.config import config_to_json
        from engine.runs.trackers import Mirror

        config = {"studio_run_id": self.run_id, **json.loads(config_to_json(self.config))}
        self.trackers = Mirror(names, project=self.config.tracker_project, run_name=self._run_name,
                               key=self.run_dir.name, config=config, resume=self.resume, report=self.event)

    def finish_trackers(self) -> None:
        if self.trackers is not None:
            self.trackers.finish()

    # --- stopping -------------------------------------------------------------------------------------
    def request_shutdown(self) -> None:
        """Called from the signal handler: finish the current step, checkpoint, and hand the run back."""
        self._shutdown = True

    def should_stop(self) -> bool:
        if self._shutdown:
            self.stop_reason = "shutdown"
            return True
        now = time.monotonic()
        if now - self._last_cancel_poll >= self._cancel_poll_s:
            self._last_cancel_poll = now
            if queue.cancel_requested(self.store, self.run_id):
                self.stop_reason = "cancel"
        return self.stop_reason is not None

    # --- checkpoints ----------------------------------------------------------------------------------
    def start_step(self) -> int:
        """The step to continue after: 0 for a fresh run, the checkpoint's step for a resumed one.

        Rows written after that checkpoint are removed, so the resumed steps are written once."""
        step = self._resume_checkpoint.step if self._resume_checkpoint else 0
        writes.truncate_after(self.store, self.run_id, step, lease=self.lease)
        return step

    @property
    def resume_checkpoint_path(self) -> Path | None:
        return Path(self._resume_checkpoint.path) if self._resume_checkpoint else None

    def checkpoint_dir(self, step: int) -> Path:
        """The folder for ``step``'s checkpoint files; LeaseLost first if this process no longer owns the run,
        so a stale process does not overwrite the files the run's new owner resumes from."""
        if self.lease is not None and not queue.lease_held(self.store, self.run_id, self.lease):
            raise queue.LeaseLost(f"run {self.run_id} is no longer held by this process: no checkpoint written")
        path = self.run_dir / "checkpoints" / f"step-{step:07d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_due(self, step: int) -> bool:
        every = getattr(self.config, "checkpoint_every", 0)
        return step == self.config.max_steps or (every > 0 and step % every == 0)

    def record_checkpoint(self, step: int, path: Path, meta: Mapping[str, Any] | None = None) -> None:
        writes.record_checkpoint(self.store, self.run_id, step, str(path), meta, lease=self.lease)

    # --- writes ---------------------------------------------------------------------------------------
    def log_step(self, step: int, metrics: Mapping[str, float], groups: Iterable[Mapping[str, Any]] = (),
                 samples: Iterable[Mapping[str, Any]] = ()) -> None:
        groups, samples = list(groups), list(samples)
        writes.write_step(self.store, self.run_id, step, metrics, groups, samples, lease=self.lease)
        if self.trackers is not None:  # after the store has the step: the store is the record
            self.trackers.log_step(step, metrics, groups, samples)

    def write_comparison(self, rows: Iterable[Mapping[str, Any]]) -> None:
        writes.write_comparison(self.store, self.run_id, rows, lease=self.lease)

    def event(self, message: str, level: str = "info") -> None:
        with self.store.write() as s:
            queue.check_lease(s, self.run_id, self.lease)
            queue.add_event(s, self.run_id, message, level)

    def setup(self, what: str) -> None:
        """A setup phase before the first step (data, model, sampler, reward, the baseline evaluation), on the
        run's event log: the run page shows the latest one while no step is logged yet."""
        self.event(f"setup: {what}")

    def setup_done(self, start: int) -> None:
        self.event(f"setup done in {time.monotonic() - self._started:.0f} s: training from step {start + 1}")

    def record_evaluation(self, benchmark: str, metrics: Mapping[str, Any], *, model: str, dataset_version: str,
                          step: int | None = None, checkpoint: str | None = None,
                          evaluated: Mapping[str, Any] | None = None, announce: bool = True) -> int:
        """Store one evaluation under this run. ``evaluated`` says what was scored (evaluated_model,
        evaluated_run_id, evaluated_step, model_path, source); without it the run evaluated itself: its own
        weights at ``step`` (0 = before training) of base model ``model``. With ``announce`` its headline
        numbers go to the run's event log too."""
        subject = dict(evaluated) if evaluated is not None else {
            "evaluated_model": model, "evaluated_run_id": self.run_id, "evaluated_step": step, "source": "run"}
        eid = writes.record_evaluation(self.store, run_id=self.run_id, model=model, benchmark=benchmark,
                                       dataset_version=dataset_version, metrics=metrics,
                                       seed=getattr(self.config, "seed", 0), step=step, checkpoint=checkpoint,
                                       lease=self.lease, **subject)
        if announce:
            self.event(evaluation_summary(benchmark, step, metrics))
        return eid


# Scalars an evaluation's event names first, when it has them.
_HEADLINE_KEYS = ("reward/mean", "accuracy", "loss", "margin/mean", "kl")


def evaluation_summary(benchmark: str, step: int | None, metrics: Mapping[str, Any]) -> str:
    """One line for the event log: the headline numbers of an evaluation and its worst group, when it has
    per-group rewards (``reward/<group>``)."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

    shown = [f"{k} {metrics[k]:.4g}" for k in _HEADLINE_KEYS if num(metrics.get(k))]
    groups = {k[len("reward/"):]: v for k, v in metrics.items()
              if k.startswith("reward/") and k.count("/") == 1 and k not in ("reward/mean", "reward/nan_count")
              and num(v)}
    if groups:
        worst = min(groups, key=groups.__getitem__)
        shown.append(f"worst group {worst} {groups[worst]:.4g}")
    if not shown:
        shown = [f"{k} {v:.4g}" for k, v in metrics.items() if num(v)][:3]
    at = " before training" if step == 0 else f" at step {step}" if step is not None else ""
    return f"evaluation {benchmark}{at}: {', '.join(shown) or 'no numeric result'}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write-then-rename, so a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
