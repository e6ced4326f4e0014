"""CrowS-Pairs (Nangia et al., 2020): 1,508 minimal pairs, more vs less stereotypical sentence.

Evaluation only (upstream asks that it not be used for training). Bundled complete.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engine.data._rows import RowProblem, RowSink, display_name, req_choice, req_str, resolve_path
from engine.data.axes import CROWS_PAIRS_AXES
from engine.data.types import DataValidationError, LoadReport

BIAS_TYPES = tuple(CROWS_PAIRS_AXES)
REQUIRED_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


@dataclass(frozen=True)
class CrowsPair:
    pair_id: int
    sent_more: str  # the more stereotypical sentence
    sent_less: str
    stereo_antistereo: str  # "stereo" | "antistereo"
    bias_type: str
    file: str
    line: int


def load_crows_pairs(path: str | Path | None = None, strict: bool = False) -> tuple[list[CrowsPair], LoadReport]:
    """Load crows_pairs_anonymized.csv (bundled when path is None)."""
    file = resolve_path(path, "crows_pairs/crows_pairs_anonymized.csv")
    name = display_name(file)
    report = LoadReport()
    sink = RowSink(report, strict)
    rows: list[CrowsPair] = []
    with file.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            # A wrong header means a wrong file, not a bad row: nothing after it can be trusted. The header is
            # not quoted back: the file may be anything (a path typo), and its first line is its content.
            raise DataValidationError(name, 1, f"CSV header lacks columns {missing}; expected columns "
                                      f"{', '.join(REQUIRED_COLUMNS)} (a CrowS-Pairs CSV)")
        start = reader.line_num + 1
        for index, record in enumerate(reader):
            lineno = start
            start = reader.line_num + 1  # quoted fields may span lines
            try:
                if None in record:
                    raise RowProblem(f"row has {len(header) + len(record[None])} fields, header has {len(header)}")
                more = req_str(record, "sent_more")
                less = req_str(record, "sent_less")
                if more.strip() == less.strip():
                    raise RowProblem("sent_more and sent_less are identical (not a minimal pair)")
                direction = req_choice(record, "stereo_antistereo", ("stereo", "antistereo"))
                bias_type = req_choice(record, "bias_type", BIAS_TYPES)
                raw_id = (record.get("") or "").strip()
                pair_id = int(raw_id) if raw_id.isdigit() else index
            except RowProblem as problem:
                sink.bad(name, lineno, str(problem))
                continue
            rows.append(CrowsPair(pair_id, more, less, direction, bias_type, name, lineno))
            sink.ok()
    return rows, report
