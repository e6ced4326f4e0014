"""Dataset names and kinds, readable without loading any data (the config validator and the app use it)."""

from __future__ import annotations


def dataset_kind(name: str) -> str | None:
    """'prompts' or 'pairs' for a known dataset name, None for an unknown one."""
    from engine.data import registry

    spec = registry.DATASETS.get(name)
    return None if spec is None else spec.kind
