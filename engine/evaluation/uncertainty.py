"""Uncertainty of the evaluation metrics: item-level bootstrap intervals and paired before/after tests.

numpy and scipy only (no torch), so the app computes a before/after comparison from two stored results.

- Interval of a metric: scipy.stats.bootstrap over the benchmark's items (percentile method, seeded). A group's
  figure ("race/ss") is bootstrapped over that group's items only. Resamples where a metric is undefined (say, no
  ambiguous BBQ item drawn) are left out of its quantiles; a metric undefined on the items themselves gets none.
- Change between two models on the same items (same item-key digest): a paired bootstrap of the difference,
  after - before, resampling items jointly, so what the two share cancels; plus McNemar's exact test
  (scipy.stats.binomtest on the discordant items) where a metric is the share of a binary item outcome.
A change is marked when its interval excludes 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from engine.evaluation import metrics as M

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
# Cap on resampled item indices held at once (scipy's `batch`), so a big user dataset stays in memory.
_MAX_CELLS = 4_000_000


def _bootstrap(m: int, stat: Callable[[np.ndarray], dict[str, np.ndarray]], keys: list[str], n_boot: int,
               seed: int, level: float) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of stat's `keys` over n_boot resamples of m item positions."""
    from scipy import stats

    if m < 2 or not keys:
        return {k: None for k in keys}

    def stacked(index: np.ndarray, axis: int = -1) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        flat = index.reshape(-1, index.shape[-1])
        got = stat(flat)
        return np.stack([np.asarray(got[k], dtype=float).reshape(index.shape[:-1]) for k in keys])

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # NaN in some resamples is handled below, not an error
        res = stats.bootstrap((np.arange(m),), stacked, vectorized=True, n_resamples=n_boot, method="percentile",
                              confidence_level=level, batch=max(1, min(n_boot, _MAX_CELLS // m)),
                              rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float).reshape(len(keys), -1)
    alpha = (1.0 - level) / 2.0
    out: dict[str, tuple[float, float] | None] = {}
    for k, row in zip(keys, dist):
        row = row[np.isfinite(row)]
        # Fewer than half the resamples defined: the metric is too fragile here for an interval to mean much.
        out[k] = None if row.size < n_boot / 2 else (float(np.quantile(row, alpha)), float(np.quantile(row, 1 - alpha)))
    return out


def _interval_keys(table: M.ItemTable, grouped: bool) -> list[str]:
    spec = M.SPECS[table.benchmark]
    point = M.statistic(table, {k: v[None, :] for k, v in table.cols.items()}, grouped)
    return [k for k, v in point.items() if k not in spec.counts and math.isfinite(float(np.asarray(v).ravel()[0]))]


def intervals(table: M.ItemTable, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
              level: float = DEFAULT_LEVEL) -> dict[str, tuple[float, float] | None]:
    """Bootstrap interval of every (non-count) metric, overall and per group, keyed like M.compute."""
    def run(t: M.ItemTable, grouped: bool) -> dict[str, tuple[float, float] | None]:
        return _bootstrap(len(t), lambda idx: M.statistic(t, t.take(idx), grouped), _interval_keys(t, grouped),
                          n_boot, seed, level)

    out = run(table, False)
    for label, sub in M.group_tables(table):
        out.update({f"{label}/{k}": v for k, v in run(sub, True).items()})
    return out


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else float(f"{x:.{digits}g}")


def result_block(table: M.ItemTable, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 level: float = DEFAULT_LEVEL) -> dict:
    """What is stored next to a benchmark's metrics: intervals, how they were made, and the item table."""
    ci = intervals(table, n_boot, seed, level)
    return {"ci": {k: [_round(v[0]), _round(v[1])] for k, v in ci.items() if v is not None},
            "bootstrap": {"n_boot": n_boot, "level": level, "seed": seed, "method": "percentile",
                          "unit": "item"},
            "items": table.encode()}


def stored_table(metrics: Mapping) -> M.ItemTable | None:
    """The item table stored with an evaluation's metrics (None for results stored before tables were kept)."""
    items = metrics.get("items") if isinstance(metrics, Mapping) else None
    return M.ItemTable.decode(items) if isinstance(items, Mapping) and "cols" in items else None


# ------------------------------------------------------------------------------------------ paired changes
@dataclass(frozen=True)
class Change:
    before: float
    after: float
    diff: float  # after - before
    low: float | None
    high: float | None
    p_mcnemar: float | None = None  # exact McNemar test, for metrics that are shares of a binary item outcome
    n: int = 0

    @property
    def significant(self) -> bool:
        """The interval of the change excludes 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


class PairingError(ValueError):
    """Two results that are not on the same items, item by item."""


def check_pairable(before: M.ItemTable, after: M.ItemTable) -> None:
    if before.benchmark != after.benchmark:
        raise PairingError(f"cannot pair a {before.benchmark} result with a {after.benchmark} result")
    if len(before) != len(after) or not before.key_digest or before.key_digest != after.key_digest:
        raise PairingError(f"the two {before.benchmark} results are not on the same items ({len(before)} vs "
                           f"{len(after)} items, digests {before.key_digest or '-'} / {after.key_digest or '-'}): "
                           "evaluate both with the same --limit and --seed")


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes: a binomial test on the discordant pairs."""
    from scipy import stats

    b, a = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    gained, lost = int((~b & a).sum()), int((b & ~a).sum())
    if gained + lost == 0:
        return 1.0
    return float(stats.binomtest(gained, gained + lost, 0.5).pvalue)


def _mcnemar(spec: M.BenchmarkSpec, key: str, before: M.ItemTable, after: M.ItemTable) -> float | None:
    if key not in spec.binary:
        return None
    col, cond, value = spec.binary[key]
    mask = np.ones(len(before), dtype=bool) if cond is None else before.cols[cond] == value
    return mcnemar_exact(before.cols[col][mask], after.cols[col][mask]) if mask.any() else None


def paired_changes(before: M.ItemTable, after: M.ItemTable, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   level: float = DEFAULT_LEVEL) -> dict[str, Change]:
    """Every metric's change from `before` to `after` on the same items, overall and per group."""
    check_pairable(before, after)
    spec = M.SPECS[before.benchmark]

    def run(b: M.ItemTable, a: M.ItemTable, grouped: bool, prefix: str) -> dict[str, Change]:
        pb, pa = M._point(b, grouped), M._point(a, grouped)
        # a metric only one of them has (a result stored before the metric was kept) has no change
        keys = [k for k in pb if k in pa and k not in spec.counts and math.isfinite(pb[k]) and math.isfinite(pa[k])]

        def diff(idx: np.ndarray) -> dict[str, np.ndarray]:
            sb, sa = M.statistic(b, b.take(idx), grouped), M.statistic(a, a.take(idx), grouped)
            return {k: sa[k] - sb[k] for k in keys}

        ci = _bootstrap(len(b), diff, keys, n_boot, seed, level)
        out = {}
        for k in pb:
            if k in spec.counts or k not in pa:
                continue
            lo_hi = ci.get(k)
            out[prefix + k] = Change(pb[k], pa[k], pa[k] - pb[k], lo_hi[0] if lo_hi else None,
                                     lo_hi[1] if lo_hi else None, _mcnemar(spec, k, b, a), len(b))
        return out

    changes = run(before, after, False, "")
    if spec.group is not None and not np.array_equal(before.cols[spec.group], after.cols[spec.group]):
        raise PairingError("the two results group their items differently: they are not the same items")
    for (label, sb), (_, sa) in zip(M.group_tables(before), M.group_tables(after)):
        changes.update(run(sb, sa, True, f"{label}/"))
    return changes


def changes_block(changes: Mapping[str, Change], against: Mapping, n_boot: int, seed: int, level: float) -> dict:
    """A compact JSON form of paired changes: key -> [diff, low, high, McNemar p]."""
    return {"against": dict(against), "n_boot": n_boot, "level": level, "seed": seed,
            "changes": {k: [_round(c.diff), _round(c.low), _round(c.high), _round(c.p_mcnemar, 4)]
                        for k, c in changes.items()}}
