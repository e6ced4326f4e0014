"""Thin, lazy access to the Hugging Face hub for datasets that are not bundled.

Nothing here runs unless a user passes a hub id or an hf:// path; the imports are lazy so the app
and the tests (no network) never pay for them. Failures become DatasetUnavailableError with a
message that says what to do instead (download elsewhere, pass a local path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.data.types import DatasetUnavailableError


def looks_like_hub_id(text: str) -> bool:
    """'owner/name' with no local file behind it (checked by the caller)."""
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(p and not p.startswith(".") for p in parts)
        and not text.endswith((".csv", ".json", ".jsonl"))
    )


def load_hub_rows(hub_id: str, split: str = "train") -> list[dict[str, Any]]:
    """All rows of one split of a hub dataset, as plain dicts (needs `datasets` and network)."""
    try:
        import datasets  # noqa: PLC0415  (lazy: heavy, optional)
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"loading '{hub_id}' from the hub needs the 'datasets' package (pip install datasets), "
            "or download the data yourself and pass its local path"
        ) from exc
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as exc:  # network, auth and missing-dataset errors all mean the same to the user
        raise DatasetUnavailableError(
            f"could not load '{hub_id}' (split '{split}') from the Hugging Face hub: {exc}. "
            "Offline? Download the dataset elsewhere and pass its local path instead."
        ) from exc
    return [dict(row) for row in ds]


def download_hub_file(uri: str) -> Path:
    """Resolve 'hf://datasets/<owner>/<name>/<path in repo>' to a local cached file."""
    rest = uri.removeprefix("hf://")
    parts = rest.split("/")
    if len(parts) < 4 or parts[0] != "datasets":
        raise ValueError(f"{uri!r}: expected hf://datasets/<owner>/<name>/<path/in/repo>")
    repo_id, filename = "/".join(parts[1:3]), "/".join(parts[3:])
    try:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415  (lazy: optional)
    except ImportError as exc:
        raise DatasetUnavailableError(f"{uri}: needs the 'huggingface_hub' package, or pass a local path") from exc
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset"))
    except Exception as exc:  # offline, gated or missing file
        raise DatasetUnavailableError(
            f"could not download {filename} from hub dataset {repo_id}: {exc}. Offline? Pass a local path instead."
        ) from exc
