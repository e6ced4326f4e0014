"""The one way the studio hashes a file's bytes (model weights, dataset files, bundled sources), and the one
seeded order it puts items in (splits, benchmark samples, counterfactual swaps)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (weights files are too large to read whole)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def salted_key(salt: object, key: str) -> str:
    """Hex SHA-256 of `salt` and `key`: sorting by it gives a seeded order that does not depend on Python's
    per-process hash seed or on the items' order in the file, so splits and samples are the same everywhere."""
    return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()
