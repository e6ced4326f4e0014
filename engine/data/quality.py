"""When a user's dataset file is good enough to train on: one rule for submit time and for run start.

Loaders skip malformed rows and report each (file, line, reason). A few bad rows in a large file are
tolerated and reported; more than MAX_BAD_SHARE of them, or no usable row at all, means the file is
not what the dataset expects, and the run is refused with the first bad rows listed. Reasons are the
loaders' own (field names and short values, never whole lines), clipped again here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.data.types import LoadReport

MAX_BAD_SHARE = 0.05
LISTED_ROWS = 5
_REASON_CHARS = 120


class DatasetRejected(ValueError):
    """A dataset file whose rows are too often malformed, or that yields nothing to train on."""


def _clip(text: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_bad_rows(report: LoadReport, limit: int = LISTED_ROWS) -> str:
    """'FILE line 2, 12: reason; line 5: reason' for the first `limit` malformed rows, then how many more.
    Each file is named once and rows with the same reason share it, so the line stays readable."""
    groups: dict[tuple[str, str], list[int]] = {}
    for f, n, why in report.malformed[:limit]:
        groups.setdefault((f, _clip(why)), []).append(n)
    shown, named = [], set()
    for (f, why), lines in groups.items():
        where = "line" + ("s" if len(lines) > 1 else "") + " " + ", ".join(str(n) for n in lines)
        shown.append(f"{where}: {why}" if f in named else f"{f} {where}: {why}")
        named.add(f)
    more = len(report.malformed) - limit
    if more > 0:
        shown.append(f"and {more} more")
    return "; ".join(shown)


def judge_load(report: LoadReport, usable_rows: int) -> str | None:
    """Raise DatasetRejected when the load is unusable; else a note when rows were skipped (None when clean).

    `usable_rows` counts what the dataset built from the valid rows (prompts or pairs over all splits).
    """
    bad = len(report.malformed)
    total = report.rows_ok + bad
    if report.rows_ok == 0:
        detail = f": {first_bad_rows(report)}" if bad else ""
        raise DatasetRejected(f"has no valid rows ({bad} malformed of {total}){detail}")
    share = bad / total
    limit = f"{MAX_BAD_SHARE:.0%}"
    if share > MAX_BAD_SHARE:
        raise DatasetRejected(f"{bad} of {total} rows are malformed ({share:.1%}; at most {limit} may be): fix or "
                              f"remove them, first: {first_bad_rows(report)}")
    if usable_rows == 0:
        raise DatasetRejected(f"its {report.rows_ok} valid rows give no usable example for this dataset (check that "
                              "the file is the dataset's layout and holds its groups)")
    if bad:
        return (f"skipped {bad} malformed row(s) of {total} ({share:.1%}, under the {limit} limit): "
                f"{first_bad_rows(report)}")
    return None


def load_training_rows(cfg: Any, event: Callable[[str, str], None]) -> list[Any]:
    """A run's train split, judged by the same rule as at submit time (the file may have changed since):
    skipped rows become a warning event of the run, an unusable file a one-line ConfigError."""
    from engine.config import ConfigError
    from engine.data.registry import dataset_args, load_named_splits_with_report
    from engine.data.user_file import UserFileError, content_hash

    where = f"dataset {cfg.dataset_path}" if cfg.dataset_path else f"dataset {cfg.dataset!r}"
    field = "dataset_path" if cfg.dataset_path else "dataset"
    want = getattr(cfg, "dataset_sha256", None)
    if want and cfg.dataset_path:
        # The run trains on the copy made at submit; a different hash means it was edited, and the run would no
        # longer train on the data its config names.
        have = content_hash(cfg.dataset_path)
        if have != want:
            raise ConfigError({field: f"{where} has SHA-256 {have[:12]}..., not the {want[:12]}... recorded when the "
                                      "run was queued: it was changed; submit the run again with the file you want"})
    try:
        splits, report = load_named_splits_with_report(cfg.dataset, seed=cfg.seed, **dataset_args(cfg))
    except UserFileError as e:
        raise ConfigError({field: str(e)}) from None
    try:
        note = judge_load(report, sum(len(rows) for rows in splits.values()))
    except DatasetRejected as e:
        raise ConfigError({field: f"{where} {e}"}) from None
    if not splits["train"]:
        raise ConfigError({field: f"{where} has no training rows: choose another dataset or path"})
    if note:
        event(f"{where}: {note}", "warning")
    return splits["train"]
