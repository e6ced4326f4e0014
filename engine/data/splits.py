"""Deterministic, disjoint train / validation / eval splits by a stable key.

Items are split by key (template, question id, Wikipedia entity, ...) rather than one by one, so
near-duplicates never straddle splits. Assignment depends only on the set of keys and the seed,
never on input order or Python's hash randomisation. The held-out "eval" split is by default the
same for every seed, so evaluations of runs with different seeds are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from engine.hashing import salted_key

T = TypeVar("T")

SPLITS = ("train", "validation", "eval")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
EVAL_SALT = "held-out-eval-v1"


def default_key(item: Any) -> str:
    """meta['split_key'] when the item has one, else a `split_key` attribute, else its prompt."""
    meta = getattr(item, "meta", None)
    if isinstance(meta, dict) and "split_key" in meta:
        return str(meta["split_key"])
    key = getattr(item, "split_key", None)
    if key is not None:
        return str(key)
    prompt = getattr(item, "prompt", None)
    return str(prompt) if prompt is not None else repr(item)


def _count(n: int, fraction: float) -> int:
    # A non-zero fraction of a non-trivial key set never rounds down to an empty split.
    if fraction <= 0 or n == 0:
        return 0
    return min(n, max(1, round(n * fraction)))


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def assign_keys(
    keys: Sequence[Hashable], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, fixed_eval: bool = True
) -> dict[str, str]:
    """key -> split name. The eval keys are drawn first (seed-free when fixed_eval), then validation."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be 3 non-negative numbers (train, validation, eval) summing to 1, got {tuple(fractions)}"
        )
    unique = sorted({str(k) for k in keys})
    n = len(unique)
    n_eval = _count(n, fractions[2])
    n_val = min(n - n_eval, _count(n, fractions[1]))
    eval_salt = EVAL_SALT if fixed_eval else f"{EVAL_SALT}:{seed}"
    by_eval_rank = sorted(unique, key=lambda k: salted_key(eval_salt, k))
    out = {k: "eval" for k in by_eval_rank[:n_eval]}
    rest = sorted(by_eval_rank[n_eval:], key=lambda k: salted_key(f"seed:{seed}", k))
    out.update({k: "validation" for k in rest[:n_val]})
    out.update({k: "train" for k in rest[n_val:]})
    return out


def split_examples(
    items: Sequence[T],
    seed: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    key: Callable[[T], Hashable] = default_key,
    fixed_eval: bool = True,
) -> dict[str, list[T]]:
    """Split items into {"train", "validation", "eval"} lists (input order kept within each split)."""
    keys = [str(key(item)) for item in items]
    assignment = assign_keys(keys, seed, fractions, fixed_eval)
    out: dict[str, list[T]] = {name: [] for name in SPLITS}
    for item, k in zip(items, keys, strict=True):
        out[assignment[k]].append(item)
    return out
