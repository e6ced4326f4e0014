"""The one way the studio hashes a file's bytes (model weights, dataset files, bundled sources), and the one
seeded order it puts items in (splits, benchmark samples, counterfactual swaps, bundled subsets)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (weights files are too large to read whole)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def salted_key(*parts: object) -> str:
    """Hex SHA-256 of `parts` (a salt or seed first, then what identifies the item), joined by NUL: sorting by it
    gives a seeded order that does not depend on Python's per-process hash seed or on the items' order in the
    file, so splits, samples and bundled subsets are the same everywhere."""
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()
