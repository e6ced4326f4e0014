"""Internal helpers for loaders: locating files, validating fields, and collecting malformed rows.

Every loader validates row by row: a bad row raises `RowProblem` inside the loop, and `RowSink`
either records it in the LoadReport (strict=False) or turns it into a DataValidationError that
names file and line (strict=True). Nothing is dropped without being reported.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.data.types import DataValidationError, LoadReport

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


class RowProblem(Exception):
    """Raised inside a loader's row loop; carries the reason only (the sink adds file and line)."""


class RowSink:
    """Collects malformed rows, or raises on the first one when strict."""

    def __init__(self, report: LoadReport, strict: bool) -> None:
        self.report = report
        self.strict = strict

    def bad(self, file: str, line: int, reason: str) -> None:
        if self.strict:
            raise DataValidationError(file, line, reason)
        self.report.add_malformed(file, line, reason)

    def ok(self, n: int = 1) -> None:
        self.report.rows_ok += n


def display_name(path: Path) -> str:
    """Short file name for messages: relative to the bundle when bundled, else the path as given."""
    try:
        return path.resolve().relative_to(BUNDLED_DIR).as_posix()
    except ValueError:
        return str(path)


def resolve_path(path: str | Path | None, bundled_subdir: str) -> Path:
    """`None` means the bundled copy; `hf://datasets/<repo>/<file>` downloads one file from the hub."""
    if path is None:
        return BUNDLED_DIR / bundled_subdir
    text = str(path)
    if text.startswith("hf://"):
        from engine.data.hub import download_hub_file

        return download_hub_file(text)
    p = Path(text).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory (pass an existing path, or None for the bundled data)")
    return p


def iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) for each non-blank line; blank lines carry no row and are skipped."""
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text:
                yield lineno, text


def parse_json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowProblem(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise RowProblem(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def load_json_document(path: Path) -> tuple[Any, str]:
    """Parse a whole JSON file; a syntax error becomes a DataValidationError with its line."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise DataValidationError(display_name(path), exc.lineno, f"not valid JSON: {exc.msg}") from None


class JsonLocator:
    """Best-effort line numbers for values in a nested JSON file.

    Python's json module keeps no positions, and nested files (BOLD, HolisticBias, StereoSet's
    official layout) are validated per entry, so we find each key's quoted form in the raw text,
    each after the previous one. Prefix positions are cached so a whole file costs ~linear time.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        self._cache: dict[tuple[str, ...], int] = {(): 0}

    def _pos(self, keys: tuple[str, ...]) -> int:
        if keys in self._cache:
            return self._cache[keys]
        start = self._pos(keys[:-1])
        hit = self.text.find(json.dumps(keys[-1]), start)
        pos = start if hit < 0 else hit
        self._cache[keys] = pos
        return pos

    def line(self, *keys: str) -> int:
        return bisect.bisect_left(self._newlines, self._pos(tuple(keys))) + 1


# ---- field validators: each returns the typed value or raises RowProblem with a concrete reason ----


SHOWN_CHARS = 16


def show_value(value: Any) -> str:
    """A value for a message: short scalars as they are, anything longer by its size only. The file may be
    anything (a mistyped path), so messages say what is wrong without quoting its content at length."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOWN_CHARS else f"text of {len(value)} characters"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    return type(value).__name__


_show = show_value


def req(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise RowProblem(f"missing field '{name}'")
    return row[name]


def req_str(row: dict[str, Any], name: str) -> str:
    value = req(row, name)
    if not isinstance(value, str) or not value.strip():
        raise RowProblem(f"field '{name}' must be a non-empty string, got {_show(value)}")
    return value


def req_choice(row: dict[str, Any], name: str, choices: Sequence[str]) -> str:
    value = req(row, name)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise RowProblem(f"field '{name}' must be one of {allowed}, got {_show(value)}")
    return value


def req_int(row: dict[str, Any], name: str, allowed: Sequence[int] | None = None, minimum: int | None = None) -> int:
    value = req(row, name)
    # bool is an int subclass; a True label is a data error, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise RowProblem(f"field '{name}' must be an integer, got {_show(value)}")
    if allowed is not None and value not in allowed:
        shown = ", ".join(str(a) for a in allowed[:-1]) + f" or {allowed[-1]}"
        raise RowProblem(f"field '{name}' must be {shown}, got {value}")
    if minimum is not None and value < minimum:
        raise RowProblem(f"field '{name}' must be >= {minimum}, got {value}")
    return value


def req_dict(row: dict[str, Any], name: str) -> dict[str, Any]:
    value = req(row, name)
    if not isinstance(value, dict):
        raise RowProblem(f"field '{name}' must be an object, got {_show(value)}")
    return value


def req_str_list(value: Any, what: str, min_len: int = 0) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowProblem(f"{what} must be a list of strings, got {_show(value)}")
    if len(value) < min_len:
        raise RowProblem(f"{what} must have at least {min_len} entries, got {len(value)}")
    return value


def req_probabilities(values: Any, what: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise RowProblem(f"{what} must be a list of numbers, got {_show(values)}")
    out: list[float] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RowProblem(f"{what}[{i}] must be a finite number, got {_show(v)}")
        # Survey shares are rounded upstream; allow a little slack above 1.
        if v < 0 or v > 1.001:
            raise RowProblem(f"{what}[{i}] must be a share in [0, 1], got {v}")
        out.append(float(v))
    return tuple(out)
