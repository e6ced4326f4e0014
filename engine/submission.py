"""Submit-time checks: what needs the submitting machine or the store, run once before a config is queued.

parse_config stays store-free because the run process re-parses the stored config; these checks run in
``submit_run`` here (which then queues the run with db.queue.submit_run, from plain values), so `studio submit`,
`studio clone` and the web app share them:

- paths: a relative model, dataset or reward-model path is resolved against the submitting process's working
  directory (your shell's for the CLI, the server's for the web app), symlinks followed, and stored absolute, so
  the engine reads the file that was checked whatever its own working directory;
- STUDIO_DATA_DIRS (directories separated by os.pathsep): when set, those paths must lie inside one of them. The
  web app behind STUDIO_PASSWORD always enforces it, and with the variable unset it takes no server path at all;
- run:ID references (compare, eval) must name an existing training run that has a checkpoint;
- trackers (engine.runs.trackers) must be installed here, or the refusal names the pip extra that installs them;
- a dataset_path is parsed with the dataset's own loader: a file whose rows are malformed too often (see
  engine.data.quality) is refused with the first bad rows; a few skipped rows become a warning event of the run;
- your own file (prompts_file, pairs_file; engine.data.user_file) is refused on any bad row, with the file and the
  row, and when it passes it is copied to $STUDIO_HOME/datasets/<sha256>/ and the stored config points at the copy
  and records the hash (dataset_path, dataset_sha256), so the run says which data trained it.

Torch-free (the web app calls it). Every refusal is a ConfigError naming the field.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from typing import Any

from engine.config import ALGORITHM_LABELS, DEFAULT_MODEL, BaseRunConfig, ConfigError, config_to_json, parse_config

DATA_DIRS_ENV = "STUDIO_DATA_DIRS"
PASSWORD_ENV = "STUDIO_PASSWORD"
MODEL_FIELDS = ("model", "model_a", "model_b")
_NO_MODEL = {"synthetic": "a synthetic experiment", "compare": "a comparison job", "eval": "an evaluation job"}


def data_dirs() -> list[str] | None:
    """The allowed directories (real paths), or None when STUDIO_DATA_DIRS is unset or empty."""
    raw = os.environ.get(DATA_DIRS_ENV, "")
    dirs = [os.path.realpath(os.path.expanduser(d)) for d in raw.split(os.pathsep) if d.strip()]
    return dirs or None


def _is_model_path(value: str) -> bool:
    """Mirrors check_model_path: embedded ids, run references and hub ids are not paths on this machine."""
    if value.startswith(("embedded:", "run:")):
        return False
    return value.startswith(("/", ".", "~")) or os.path.exists(value)


def _path_fields(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(problem key, value) of every path in a raw config dict: models, dataset_path, reward-model paths."""
    out = []
    for name in MODEL_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and _is_model_path(value.strip()):
            out.append((name, value.strip()))
    value = data.get("dataset_path")
    if isinstance(value, str) and value.strip():
        out.append(("dataset_path", value))
    rewards = data.get("rewards")
    for i, spec in enumerate(rewards if isinstance(rewards, list) else []):
        params = spec.get("params") if isinstance(spec, Mapping) else None
        value = params.get("path") if isinstance(params, Mapping) else None
        if isinstance(value, str) and _is_model_path(value.strip()):
            out.append((f"rewards.{i}.params", value.strip()))
    return out


def absolute(value: str) -> str:
    return os.path.realpath(os.path.expanduser(value))


def _inside(real: str, dirs: list[str]) -> bool:
    return any(os.path.commonpath([real, d]) == d for d in dirs)


def _studio_dataset(key: str, value: str) -> bool:
    """A dataset the studio holds itself (a hashed copy, a browser upload): always readable, so a run cloned from
    the web app or an uploaded file is not refused by STUDIO_DATA_DIRS."""
    from engine.data.user_file import datasets_dir

    return key == "dataset_path" and _inside(absolute(value), [os.path.realpath(datasets_dir())])


def path_problems(data: Mapping[str, Any], *, web: bool = False) -> dict[str, str]:
    """Paths the allow-list refuses, by problem key. Judged on the raw values, before anything opens them."""
    dirs = data_dirs()
    locked_web = web and bool(os.environ.get(PASSWORD_ENV))
    if dirs is None and not locked_web:
        return {}
    problems: dict[str, str] = {}
    for key, value in _path_fields(data):
        if _studio_dataset(key, value):
            continue
        shown = value if len(value) <= 80 else value[:77] + "..."
        if dirs is None:
            problems[key] = (f"path {shown!r} is on the server, and this password-protected web app reads no "
                             f"server paths: the administrator can allow directories with {DATA_DIRS_ENV}="
                             f"/dir/one{os.pathsep}/dir/two where the app runs, or submit with `studio submit`")
        elif not _inside(absolute(value), dirs):
            problems[key] = (f"path {shown!r} is outside the directories allowed by {DATA_DIRS_ENV} "
                             f"({os.pathsep.join(dirs)}), after following symlinks: move it into one of them or add "
                             f"its directory to {DATA_DIRS_ENV}")
    return problems


def without_paths(data: Mapping[str, Any], keys: Any) -> dict[str, Any]:
    """A copy of a raw config with the given path fields replaced by harmless values, so that validating the rest
    never touches a refused path (its existence is nobody's business)."""
    out = dict(data)
    for key in keys:
        if key in MODEL_FIELDS:
            out[key] = DEFAULT_MODEL
        elif key == "dataset_path":
            out[key] = None
        elif key.startswith("rewards."):
            i = int(key.split(".")[1])
            out["rewards"] = list(out["rewards"])
            spec = dict(out["rewards"][i])
            spec["params"] = {k: v for k, v in spec["params"].items() if k != "path"}
            out["rewards"][i] = spec
    return out


def _run_ref_problem(store: Any, value: str) -> str | None:
    from sqlalchemy import func, select

    from db.models import Checkpoint, Run

    ident, _, at = value[4:].partition("@")  # run:ID or run:ID@STEP
    run_id = int(ident)
    with store.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            return f"{value}: run {run_id} does not exist (`studio runs` lists the runs): name a training run"
        if run.algorithm in _NO_MODEL:
            return f"{value}: run {run_id} is {_NO_MODEL[run.algorithm]} and has no model: name a training run"
        steps = list(s.scalars(select(Checkpoint.step).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)))
    if not steps:
        return (f"{value}: run {run_id} has no checkpoint yet: wait for its first one (every checkpoint_every steps "
                "and at the end) or name another run")
    if at and int(at) not in steps:
        return f"{value}: run {run_id} has no checkpoint at step {int(at)}: it has steps {', '.join(map(str, steps))}"
    return None


def _dataset_problem(cfg: BaseRunConfig, path: str) -> tuple[str | None, str | None]:
    """(problem, note) from loading the dataset file with its own loader."""
    from engine.data.quality import DatasetRejected, judge_load
    from engine.data.registry import dataset_args, load_named_splits_with_report
    from engine.data.types import DataValidationError

    try:
        splits, report = load_named_splits_with_report(cfg.dataset, seed=cfg.seed,  # type: ignore[attr-defined]
                                                        **{**dataset_args(cfg), "path": path})
    except DataValidationError as e:  # a benchmark file's first bad row, or every bad row of your own file
        return str(e), None
    except UnicodeDecodeError as e:
        return f"a file of {path!r} is not UTF-8 text (byte {e.start}): save it as UTF-8", None
    except (ValueError, KeyError, OSError, csv.Error, RecursionError) as e:
        msg = " ".join(str(e).split())
        return (msg if len(msg) <= 300 else msg[:297] + "...") or type(e).__name__, None
    try:
        note = judge_load(report, sum(len(rows) for rows in splits.values()))
    except DatasetRejected as e:
        return str(e), None
    if not splits["train"]:
        return f"gives no training rows for dataset {cfg.dataset!r}", None  # type: ignore[attr-defined]
    return None, (f"dataset {path}: {note}" if note else None)


def check_submission(store: Any, cfg: BaseRunConfig, *, web: bool = False) -> tuple[BaseRunConfig, list[str]]:
    """The config to queue (paths made absolute) and warnings for its event log; ConfigError when refused."""
    data = json.loads(config_to_json(cfg))
    problems = path_problems(data, web=web)
    if problems:
        raise ConfigError(problems)
    for key, value in _path_fields(data):
        if key.startswith("rewards."):
            data["rewards"][int(key.split(".")[1])]["params"]["path"] = absolute(value)
        else:
            data[key] = absolute(value)
    for name in MODEL_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and value.startswith("run:"):
            problem = _run_ref_problem(store, value)
            if problem:
                problems[name] = problem
    if data.get("trackers"):
        from engine.runs.trackers import missing_problem

        problem = missing_problem(data["trackers"])
        if problem:
            problems["trackers"] = problem
    notes: list[str] = []
    own_file = _is_own_file(cfg)
    if data.get("dataset_path"):
        problem = _size_problem(data["dataset_path"]) if own_file else None
        problem, note = (problem, None) if problem else _dataset_problem(cfg, data["dataset_path"])
        if problem:
            problems["dataset_path"] = problem
        if note:
            notes.append(note)
    if problems:
        raise ConfigError(problems)
    if own_file and data.get("dataset_path"):
        _store_dataset(data)
    return parse_config(data), notes


def _is_own_file(cfg: BaseRunConfig) -> bool:
    from engine.data.registry import is_file_dataset

    return is_file_dataset(getattr(cfg, "dataset", ""))


def _size_problem(path: str) -> str | None:
    from pathlib import Path

    from engine.data.user_file import UserFileError, check_size

    try:
        check_size(Path(path))
    except UserFileError as e:
        return str(e)
    return None


def _store_dataset(data: dict[str, Any]) -> None:
    """Copy the checked file under $STUDIO_HOME/datasets/<sha256>/ and point the config at the copy, with its hash.
    A hash already in the config (a clone, or one written by hand) must match the file: the run is refused rather
    than trained on other data than the config says."""
    from engine.data.user_file import UserFileError, content_hash, store_copy

    source = data["dataset_path"]
    digest = content_hash(source)
    recorded = data.get("dataset_sha256")
    if recorded and recorded != digest:
        raise ConfigError({"dataset_sha256": f"is {recorded[:12]}..., but {source} has SHA-256 {digest[:12]}...: the "
                                             "file is not the one this config was made with; clear dataset_sha256 to "
                                             "train on the file as it is now"})
    try:
        copy, digest = store_copy(source, digest)
    except (UserFileError, OSError) as e:
        raise ConfigError({"dataset_path": f"could not be copied into the studio's datasets folder: {e}"}) from None
    data["dataset_path"], data["dataset_sha256"] = str(copy), digest


def submit_run(store: Any, config: BaseRunConfig, *, parent_id: int | None = None, web: bool = False) -> int:
    """Queue a run after the submit-time checks (they raise ConfigError). ``web``: submitted from the web app.
    A run without a name is named after its algorithm and the time."""
    from datetime import datetime, timezone

    from db.queue import submit_run as queue_run

    config, notes = check_submission(store, config, web=web)
    name = config.name or (f"{ALGORITHM_LABELS.get(config.algorithm, config.algorithm)} "
                           f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}")
    return queue_run(store, algorithm=config.algorithm, name=name, config_json=config_to_json(config),
                     total_steps=config.max_steps, parent_id=parent_id, notes=notes)


def clone_run(store: Any, run_id: int, overrides: Mapping[str, Any] | None = None) -> int:
    """A new queued run with the same config (plus overrides), remembering where it came from."""
    from db.queue import get_run

    src = get_run(store, run_id)
    data = json.loads(src.config_json)
    data.update(overrides or {})
    if not overrides or "name" not in overrides:
        data["name"] = f"{src.name} (clone)"
    return submit_run(store, parse_config(data), parent_id=run_id)
