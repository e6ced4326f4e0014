"""Which rows a training step uses, as a pure function of (seed, step): ``BatchSchedule`` (so a resumed run draws
exactly the batches an uninterrupted one would, with no sampler state to checkpoint), ``derive_seed`` and the
fixed held-out subset ``balanced_subset``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


SamplingMode = Literal["balanced", "random"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (run seed, step, purpose): stable across processes and Python versions."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class BatchSchedule:
    """Row indices of each step's batch, a pure function of (seed, step).

    "random": a stream of seeded permutations of all rows (one per epoch), cut into batches.
    "balanced": draws cycle over the groups (sorted names) and each group walks its own seeded permutations,
    so every group is drawn equally often whatever its size.
    """

    groups: Sequence[str]  # group label of every row
    batch_size: int
    seed: int
    mode: SamplingMode = "balanced"
    _members: dict[str, list[int]] = field(init=False, default_factory=dict)
    _perms: dict[tuple[str, int], list[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("the training set is empty: choose a dataset (or limit) with at least one row")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.mode not in ("balanced", "random"):
            raise ValueError(f"group sampling must be 'balanced' or 'random', got {self.mode!r}")
        for i, g in enumerate(self.groups):
            self._members.setdefault(g, []).append(i)
        self._members = dict(sorted(self._members.items()))

    def _perm(self, key: str, epoch: int, members: list[int]) -> list[int]:
        import numpy as np

        cache_key = (key, epoch)
        if cache_key not in self._perms:
            if len(self._perms) > 256:  # a long run visits many epochs; old ones are never read again
                self._perms.clear()
            rng = np.random.default_rng(derive_seed("batch-order", self.seed, key, epoch))
            self._perms[cache_key] = [members[j] for j in rng.permutation(len(members))]
        return self._perms[cache_key]

    def indices(self, step: int) -> list[int]:
        """Rows of training step ``step`` (1-based)."""
        if step < 1:
            raise ValueError(f"steps are 1-based, got {step}")
        first = (step - 1) * self.batch_size
        out: list[int] = []
        if self.mode == "random":
            everyone = list(range(len(self.groups)))
            n = len(everyone)
            for j in range(first, first + self.batch_size):
                out.append(self._perm("*", j // n, everyone)[j % n])
            return out
        names = list(self._members)
        k = len(names)
        for j in range(first, first + self.batch_size):
            name = names[j % k]
            members = self._members[name]
            draw = j // k  # how many draws this group had before this one
            out.append(self._perm(name, draw // len(members), members)[draw % len(members)])
        return out


def balanced_subset(groups: Sequence[str], limit: int) -> list[int]:
    """Up to ``limit`` row indices spread evenly over the groups (round-robin in row order): a fixed,
    seed-free held-out set so every evaluation of every run scores the same rows."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    queues = [by_group[g] for g in sorted(by_group)]
    out: list[int] = []
    depth = 0
    while len(out) < limit and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < limit:
                out.append(q[depth])
        depth += 1
    return sorted(out)
