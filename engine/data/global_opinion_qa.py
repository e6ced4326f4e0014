"""GlobalOpinionQA (Durmus et al., 2023): survey questions with per-country answer distributions.

License CC BY-NC-SA 4.0 (non-commercial, share-alike). Bundled: only a small non-canonical sample, the rows of
the paper's 14 countries from a flattened random sample of the dataset (engine/data/bundled/global_opinion_qa/,
SOURCE.md there; the one non-commercial set in the bundle). The full set loads from a path or the hub.
Layouts (auto-detected):
- hub layout (Anthropic/llm_global_opinions, data/global_opinions.csv): columns question,
  selections (a string like "defaultdict(<class 'list'>, {'Country': [p1, p2, ...], ...})"),
  options (a Python-literal list as a string) and source; as CSV, a JSON array, JSON lines, or rows
  straight from `datasets.load_dataset(hub_id)`;
- flattened sample layout (e.g. GlobalOpinionBench's eval.json): a JSON array (or JSON lines) of
  {"country", "question", "options", "distribution"} objects.
Both become one GlobalOpinionRow per (question, country).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data._rows import (
    BUNDLED_DIR,
    RowProblem,
    RowSink,
    display_name,
    req,
    req_probabilities,
    req_str,
    show_value,
)
from engine.data.hub import load_hub_rows, looks_like_hub_id
from engine.data.types import DataValidationError, LoadReport

HUB_ID = "Anthropic/llm_global_opinions"
_SEPARATORS = re.compile(r"[\s,]*")
HUB_COLUMNS = ("question", "selections", "options")
FLAT_COLUMNS = ("country", "question", "options", "distribution")
# The bundled sample (flattened layout, JSON lines); engine/data/bundle.py writes it.
BUNDLED_FILE = BUNDLED_DIR / "global_opinion_qa" / "goqa_paper_countries.jsonl"

# The countries of the paper's GOQA experiments (rsshyam/Group-robust-preference-optimization,
# src/groupstuff/global_opinion_data_processing.py); its 5-group runs use the first five.
PAPER_COUNTRIES = (
    "Nigeria",
    "Egypt",
    "India (Current national sample)",
    "China",
    "Japan",
    "Germany",
    "France",
    "Spain",
    "United States",
    "Canada",
    "Brazil",
    "Argentina",
    "Australia",
    "New Zealand",
)


@dataclass(frozen=True)
class GlobalOpinionRow:
    question_id: str  # stable id of the question (shared by all its countries)
    question: str
    options: tuple[str, ...]
    country: str
    distribution: tuple[float, ...]  # share of the country's respondents per option
    source: str | None  # "GAS" (Pew) | "WVS" | None when the layout has no source
    file: str
    line: int

    @property
    def split_key(self) -> str:
        # Split by question so no question's answers (for any country) leak across splits.
        return f"goqa/{self.question_id}"


def question_id(question: str, options: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([question, list(options)]).encode()).hexdigest()[:16]


def parse_selections(value: Any) -> dict[str, Any]:
    """The hub's selections column: a dict, or the repr of a defaultdict holding one."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise RowProblem(f"field 'selections' must be a dict or its string form, got {type(value).__name__}")
    start, end = value.find("{"), value.rfind("}")
    if start < 0 or end < start:
        raise RowProblem("field 'selections' holds no {country: [shares]} dict")
    try:
        parsed = ast.literal_eval(value[start : end + 1])
    except (ValueError, SyntaxError) as exc:
        raise RowProblem(f"field 'selections' is not a Python-literal dict ({exc.__class__.__name__})") from None
    if not isinstance(parsed, dict):
        raise RowProblem("field 'selections' must hold a dict")
    return parsed


def parse_options(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise RowProblem("field 'options' is not a Python-literal list") from None
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise RowProblem(f"field 'options' must be a list of at least 2 answer options, got {show_value(value)}")
    if any(o is None or str(o).strip() == "" for o in value):
        raise RowProblem("field 'options' contains an empty option")
    # Some options are numbers (scales); the prompt shows them as text.
    return tuple(str(o) for o in value)


def _country_row(
    qid: str,
    question: str,
    options: tuple[str, ...],
    country: Any,
    shares: Any,
    source: str | None,
    file: str,
    line: int,
) -> GlobalOpinionRow:
    if not isinstance(country, str) or not country.strip():
        raise RowProblem(f"country must be a non-empty string, got {show_value(country)}")
    dist = req_probabilities(shares, f"distribution for {country!r}")
    if len(dist) != len(options):
        raise RowProblem(f"distribution for {country!r} has {len(dist)} shares but there are {len(options)} options")
    if sum(dist) <= 0:
        raise RowProblem(f"distribution for {country!r} sums to 0 (no respondents)")
    return GlobalOpinionRow(qid, question, options, country, dist, source, file, line)


def _rows_from_hub_record(
    record: dict[str, Any], file: str, line: int, sink: RowSink, wanted: set[str] | None
) -> list[GlobalOpinionRow]:
    """One hub record fans out into one row per country; a bad country is reported on its own."""
    question = req_str(record, "question")
    options = parse_options(req(record, "options"))
    selections = parse_selections(req(record, "selections"))
    if not selections:
        raise RowProblem("field 'selections' has no countries")
    source = record.get("source") or None
    qid = question_id(question, options)
    out = []
    for country, shares in selections.items():
        if wanted is not None and country not in wanted:
            continue
        try:
            out.append(_country_row(qid, question, options, country, shares, source, file, line))
        except RowProblem as problem:
            sink.bad(file, line, str(problem))
    return out


def _rows_from_flat_record(record: dict[str, Any], file: str, line: int) -> GlobalOpinionRow:
    question = req_str(record, "question")
    options = parse_options(req(record, "options"))
    return _country_row(
        question_id(question, options),
        question,
        options,
        req(record, "country"),
        req(record, "distribution"),
        record.get("source") or None,
        file,
        line,
    )


def _iter_json_array(text: str, file: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a top-level JSON array, with exact line numbers."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if text[pos : pos + 1] != "[":
        raise DataValidationError(file, 1, "expected a JSON array of records")
    pos += 1
    line = 1 + text.count("\n", 0, pos)
    while True:
        nxt = _SEPARATORS.match(text, pos).end()
        line += text.count("\n", pos, nxt)
        pos = nxt
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataValidationError(file, exc.lineno, f"not valid JSON: {exc.msg}") from None
        yield line, obj
        line += text.count("\n", pos, end)
        pos = end


def _records_from_file(path: Path, name: str, sink: RowSink) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []  # reads the header line
            missing = [c for c in HUB_COLUMNS if c not in header]
            if missing:
                # Not quoted back: a mistyped path could be any file, and its first line is its content.
                raise DataValidationError(name, 1, f"CSV header lacks the hub columns {missing}; expected columns "
                                          f"{', '.join(HUB_COLUMNS)} (and optionally source)")
            start = reader.line_num + 1
            try:
                for record in reader:
                    lineno, start = start, reader.line_num + 1
                    yield lineno, record
            except csv.Error as exc:
                raise DataValidationError(name, reader.line_num, f"CSV error: {exc}") from None
        return
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records: Iterator[tuple[int, Any]] = _iter_json_array(text, name)
    else:
        records = ((n, line) for n, line in _jsonl_records(text))
    for lineno, obj in records:
        if isinstance(obj, _InvalidJSON):
            sink.bad(name, lineno, f"not valid JSON: {obj.msg}")
            continue
        if not isinstance(obj, dict):
            sink.bad(name, lineno, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


@dataclass(frozen=True)
class _InvalidJSON:
    msg: str  # json.JSONDecodeError's message for one JSON line


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                yield lineno, _InvalidJSON(exc.msg)


def load_global_opinion_qa(
    path_or_hub_id: str | Path | None = None,
    countries: Sequence[str] | None = None,
    strict: bool = False,
    hub_split: str = "train",
) -> tuple[list[GlobalOpinionRow], LoadReport]:
    """Load GlobalOpinionQA rows (one per question x country) from a file, a hub dataset id, or (None) the bundled
    sample of the paper's 14 countries.

    `countries` keeps only those countries (others are skipped, not reported). Rows whose
    distribution is empty, all zero, or mismatched with the options are reported as malformed.
    """
    if path_or_hub_id is None:
        path_or_hub_id = BUNDLED_FILE
    report = LoadReport()
    sink = RowSink(report, strict)
    text = str(path_or_hub_id)
    path = Path(text).expanduser()
    if path.exists():
        name = display_name(path)
        records = _records_from_file(path, name, sink)
    elif looks_like_hub_id(text):
        name = text
        records = ((i + 1, r) for i, r in enumerate(load_hub_rows(text, split=hub_split)))
    else:
        raise FileNotFoundError(f"{text}: no such file, and not a hub dataset id like '{HUB_ID}'")

    wanted = set(countries) if countries is not None else None
    rows: list[GlobalOpinionRow] = []
    for lineno, record in records:
        try:
            if "selections" in record:
                produced = _rows_from_hub_record(record, name, lineno, sink, wanted)
            elif "distribution" in record:
                if wanted is not None and record.get("country") not in wanted:
                    continue
                produced = [_rows_from_flat_record(record, name, lineno)]
            else:
                raise RowProblem(
                    f"record has neither the hub columns {list(HUB_COLUMNS)} "
                    f"nor the flattened ones {list(FLAT_COLUMNS)}; "
                    f"keys: {[k[:20] for k in sorted(record)[:8]]}"
                )
        except RowProblem as problem:
            sink.bad(name, lineno, str(problem))
            continue
        rows.extend(produced)
        sink.ok(len(produced))
    return rows, report
