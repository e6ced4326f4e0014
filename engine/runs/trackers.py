"""Mirror a run to experiment trackers: trackio (local, SQLite-backed, the wandb-style API) and Weights & Biases.

The studio's own store stays the source of truth: a step is written there first (RunContext.log_step) and only
then mirrored. A tracker never fails the run: every call into it is wrapped, the first exception is recorded
once as a warning event of the run, and that tracker is switched off for the rest of the attempt.

- trackio writes under ``$TRACKIO_DIR``, which the studio points at ``$STUDIO_HOME/trackio`` unless you set it
  (trackio reads it when it is imported, so it is set before the import, in the run process). A run's trackio run
  is named after the studio run and its folder token, and a resumed run continues the same trackio run
  (``resume="allow"``); the steps trackio already holds from before the interruption are not logged again (the
  studio rewrites them from the checkpoint with the same values, timings aside).
- wandb is used only where it is installed; its own settings apply (``WANDB_MODE=offline`` logs without a network
  or an account, under ``$STUDIO_HOME/wandb`` unless ``WANDB_DIR`` is set); its run id is the studio run's, so a
  resumed run continues it.

Per step a tracker gets the metrics dict the store got, plus the group rows as ``weight/<group>`` (the group
weights, the run page's headline chart) and ``group/<group>/<field>``, plus the step's stored samples as a table
under ``samples``. Standard library only at import: the app asks which trackers are installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "bias-studio"
SAMPLES_KEY = "samples"
SAMPLE_COLUMNS = ("step", "group", "prompt", "completion", "reward", "advantage")


@dataclass(frozen=True)
class TrackerSpec:
    module: str  # what must be importable
    extra: str  # the pip extra of this project that installs it
    help: str


# The names a config may give (engine.config.TRACKER_NAMES), with what each needs.
TRACKERS: dict[str, TrackerSpec] = {
    "trackio": TrackerSpec("trackio", "trackers", "trackio: a local dashboard over a SQLite file "
                                                  "(`trackio show --project NAME`)"),
    "wandb": TrackerSpec("wandb", "wandb", "Weights & Biases (WANDB_MODE=offline logs without a network)"),
}


def installed(name: str) -> bool:
    spec = TRACKERS.get(name)
    try:
        return spec is not None and importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError):
        return False


def available_trackers() -> list[str]:
    return [name for name in TRACKERS if installed(name)]


def install_hint(name: str) -> str:
    return f"pip install -e '.[{TRACKERS[name].extra}]'"


def missing_problem(names: Iterable[str]) -> str | None:
    """Why the chosen trackers cannot run on this machine (not installed), naming the extra to install."""
    missing = [n for n in names if n in TRACKERS and not installed(n)]
    if not missing:
        return None
    return "; ".join(f"{n} is not installed: install it with `{install_hint(n)}` (from the studio's folder), or "
                     f"remove {n!r} from trackers" for n in missing)


def trackio_dir() -> Path:
    """Where trackio keeps its SQLite files for the studio: $TRACKIO_DIR if set, else $STUDIO_HOME/trackio."""
    from db.paths import studio_home

    env = os.environ.get("TRACKIO_DIR")
    return Path(env).expanduser() if env else studio_home() / "trackio"


def dashboard_command(project: str) -> str:
    return f'TRACKIO_DIR={trackio_dir()} trackio show --project "{project}"'


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def step_payload(metrics: Mapping[str, float], groups: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The scalars a tracker gets for a step: the stored metrics (non-finite ones left out, as the store keeps
    them NULL), and each group row's fields; a group's weight as ``weight/<group>`` (db.metric_keys.group_weight),
    which GRPO and preference runs already log and the synthetic experiment keeps in its group rows only."""
    from db import metric_keys as mk

    out = {k: x for k, v in metrics.items() if (x := _number(v)) is not None}
    for g in groups:
        name = str(g.get("group", ""))
        for field, value in g.items():
            x = _number(value)
            if field == "group" or x is None:
                continue
            key = mk.group_weight(name) if field == mk.GROUP_WEIGHT else f"group/{name}/{field}"
            out.setdefault(key, x)
    return out


def sample_rows(step: int, samples: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a step's stored samples: the store's columns, then one ``reward/<term>`` per reward term."""
    samples = list(samples)
    terms = sorted({t for x in samples for t in (x.get("rewards") or {})})
    columns = [*SAMPLE_COLUMNS, *(f"reward/{t}" for t in terms)]
    rows = []
    for x in samples:
        terms_of = x.get("rewards") or {}
        rows.append([step, str(x.get("group", "")), str(x.get("prompt", "")), str(x.get("completion", "")),
                     _number(x.get("reward")), _number(x.get("advantage")), *(_number(terms_of.get(t)) for t in terms)])
    return columns, rows


def run_label(run_name: str, key: str) -> str:
    """A tracker run's name: the studio run's name and its key (id and folder token: unique, even when SQLite hands
    a deleted run's id to the next run), without characters that trackio uses in file paths."""
    clean = re.sub(r"[^\w .:#()+=,@-]+", "-", run_name).strip(" -") or "run"
    return f"{clean[:100]} [{key}]"


class _Backend:
    """What the trackers share: a step's payload, with the samples as the tracker's own table type, in one call
    (both take wandb's Table(columns=, data=) and log(data, step=))."""

    def log(self, step: int, payload: dict[str, Any], table: tuple[list[str], list[list[Any]]] | None) -> None:
        data: dict[str, Any] = dict(payload)
        if table is not None:
            data[SAMPLES_KEY] = self._table(*table)
        self._write(data, step)

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        raise NotImplementedError

    def _write(self, data: dict[str, Any], step: int) -> None:
        raise NotImplementedError


class _Trackio(_Backend):
    name = "trackio"

    def __init__(self, project: str, label: str, key: str, config: Mapping[str, Any], resume: bool):
        if "trackio" not in sys.modules:
            os.environ.setdefault("TRACKIO_DIR", str(trackio_dir()))
        import trackio

        self.trackio = trackio
        self.project = project
        self.where = str(trackio.utils.TRACKIO_DIR)
        # resume="allow" in both cases: a fresh studio run has a name no trackio run has (its folder token).
        self.run = trackio.init(project=project, name=label, config=dict(config), resume="allow", embed=False,
                                auto_log_cpu=False, auto_log_gpu=False)
        self.resumed = bool(resume)
        self.done_through = self._last_step(label) if resume else None

    def _last_step(self, label: str) -> int | None:
        from trackio.sqlite_storage import SQLiteStorage

        return SQLiteStorage.get_max_step_for_run(self.project, run=label, run_id=getattr(self.run, "id", None))

    def describe(self) -> str:
        tail = (f"; it continues the trackio run, which holds steps up to {self.done_through}"
                if self.done_through is not None else "")
        return (f"mirroring to trackio project {self.project!r}, run {self.run.name!r}, in {self.where}{tail}; "
                f"open the dashboard with `TRACKIO_DIR={self.where} trackio show --project \"{self.project}\"`")

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        return self.trackio.Table(columns=columns, data=rows)

    def _write(self, data: dict[str, Any], step: int) -> None:
        self.trackio.log(data, step=step)

    def finish(self) -> None:
        self.trackio.finish()


class _Wandb(_Backend):
    name = "wandb"

    def __init__(self, project: str, label: str, key: str, config: Mapping[str, Any], resume: bool):
        import wandb

        from db.paths import studio_home

        self.wandb = wandb
        self.project = project
        folder = Path(os.environ.get("WANDB_DIR") or studio_home() / "wandb")
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=label, id=re.sub(r"[^\w-]", "-", f"studio-{key}"),
                              resume="allow", config=dict(config), dir=str(folder))
        self.where = str(folder)
        self.resumed = bool(resume)
        self.done_through = None

    def describe(self) -> str:
        mode = os.environ.get("WANDB_MODE") or "online"
        return (f"mirroring to Weights & Biases project {self.project!r}, run {self.run.name!r} "
                f"(id {self.run.id}, mode {mode}) in {self.where}")

    def _table(self, columns: list[str], rows: list[list[Any]]) -> Any:
        return self.wandb.Table(columns=columns, data=rows)

    def _write(self, data: dict[str, Any], step: int) -> None:
        self.run.log(data, step=step)

    def finish(self) -> None:
        self.run.finish()


_BACKENDS: dict[str, Callable[..., Any]] = {"trackio": _Trackio, "wandb": _Wandb}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class Mirror:
    """One run's trackers. ``report(message, level)`` writes a run event (RunContext.event). Never raises from a
    tracker: a tracker that fails is reported once and dropped, and the run goes on."""

    def __init__(self, names: Iterable[str], *, project: str, run_name: str, key: str, config: Mapping[str, Any],
                 resume: bool, report: Callable[[str, str], None]):
        self.report = report
        self.active: dict[str, Any] = {}
        self.failed: list[str] = []
        for name in names:
            try:
                backend = _BACKENDS[name](project, run_label(run_name, key), key, config, resume)
            except Exception as exc:  # noqa: BLE001 - a tracker must never fail the run
                self._fail(name, "start", exc)
                continue
            self.active[name] = backend
            self.report(backend.describe(), "info")

    def _fail(self, name: str, phase: str, exc: BaseException) -> None:
        self.active.pop(name, None)
        self.failed.append(name)
        self.report(f"tracker {name} failed at {phase}: {_short(exc)}; mirroring to {name} is off for the rest of "
                    "this attempt (the run goes on, and the studio's own store has every step)", "warning")

    def log_step(self, step: int, metrics: Mapping[str, float], groups: Iterable[Mapping[str, Any]] = (),
                 samples: Iterable[Mapping[str, Any]] = ()) -> None:
        if not self.active:
            return
        groups, samples = list(groups), list(samples)
        try:
            payload = step_payload(metrics, groups)
            table = sample_rows(step, samples) if samples else None
        except Exception as exc:  # noqa: BLE001
            for name in list(self.active):
                self._fail(name, f"step {step}", exc)
            return
        for name, backend in list(self.active.items()):
            if backend.done_through is not None and step <= backend.done_through:
                continue  # a resumed run's steps the tracker already holds
            try:
                backend.log(step, payload, table)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, f"step {step}", exc)

    def finish(self) -> None:
        for name, backend in list(self.active.items()):
            try:
                backend.finish()
            except Exception as exc:  # noqa: BLE001
                self._fail(name, "finish", exc)
            else:
                self.active.pop(name, None)
