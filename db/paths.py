"""Where the studio keeps its state. Standard library only: the app, the store and the engine all import it."""

from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """$STUDIO_HOME, else ~/.cache/bias-studio: the database, model caches, run folders and exports."""
    env = os.environ.get("STUDIO_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".cache" / "bias-studio"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _run_name(run_id: int, token: str | None) -> str:
    # Rows from before folder tokens keep their old <id> folder; every newer run has a name no later run reuses.
    return f"{run_id}-{token}" if token else str(run_id)


def run_folder(run_id: int, token: str | None) -> Path:
    """A run's own folder (checkpoints, caches): $STUDIO_HOME/runs/<id>-<folder token>."""
    return studio_home() / "runs" / _run_name(run_id, token)


def run_output_log(run_id: int, token: str | None) -> Path:
    """Everything the run's process printed (all its attempts, appended): its own output beside the events."""
    return run_folder(run_id, token) / "process.log"


def run_export_cache(run_id: int, token: str | None) -> Path:
    """Where a run's checkpoints are exported, merged, to be evaluated or compared (one folder per step)."""
    return studio_home() / "exports" / f"run-{_run_name(run_id, token)}"


def remove_run_files(run_id: int, token: str | None) -> list[Path]:
    """Delete a run's folders; returns the ones left in place.

    Only a folder that lies inside the studio home is removed, and no symlink is followed: a link is
    unlinked, not its target (shutil.rmtree never descends into links either), and a folder that resolves
    outside the home (a symlinked runs/ or exports/) is left alone rather than deleted somewhere else."""
    import shutil

    home = studio_home().resolve()
    left: list[Path] = []
    for folder in (run_folder(run_id, token), run_export_cache(run_id, token)):
        if folder.is_symlink():
            folder.unlink()
            continue
        if not folder.exists():
            continue
        if not folder.is_dir() or not folder.resolve().is_relative_to(home):
            left.append(folder)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            left.append(folder)
    return left
