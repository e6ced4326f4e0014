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
