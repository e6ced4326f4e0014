"""A user's own dataset file in TRL's layouts: prompts (GRPO) or prompt / chosen / rejected pairs (DPO / IPO and
their IS / GR variants), each row labelled with its group.

Formats: JSONL, JSON (a list of objects), CSV, Parquet, and a folder written by `datasets`' `save_to_disk`.
Layouts: standard (text columns) and conversational (`prompt` a list of {role, content} messages; `chosen` /
`rejected` lists of assistant messages). A conversational row keeps its messages in `meta` so the training code
renders them with the model's chat template; its `prompt` / `chosen` / `rejected` text fields are the last user
message and the assistant replies, which is what the rewards, the samples table and the previews read.

Unlike the bundled benchmark loaders, which skip a few malformed rows and report them, a user's file is refused
whole on any bad row: a row that silently drops out of a group changes what the group-robust weights see. The
refusal names the file and the row (JSONL: its line) of the first problems.

Stdlib + pyarrow (a dependency of the app) at import time; `datasets` is imported only for a save_to_disk folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.data._rows import show_value as _show
from engine.data.types import DataValidationError, LoadReport, PreferencePair, PromptExample
from engine.hashing import sha256_file

SOURCE = "file"
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# A file larger than this is refused before it is read: the studio copies it into its home and the engine holds
# every row in memory, and 512 MiB of text is far beyond what a fine-tuning set of this size needs.
MAX_BYTES = 512 * 1024 * 1024
MAX_ROWS = 1_000_000
LISTED_PROBLEMS = 5
ROLES = ("system", "user", "assistant", "tool")
DEFAULT_COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "group": "group"}


class UserFileError(DataValidationError):
    """The file cannot be trained on. ``problems`` holds (row, reason) pairs, row None for the whole file; ``line``
    and ``reason`` are the first problem's (0 for the whole file), as for the benchmark loaders' errors."""

    def __init__(self, file: str, problems: list[tuple[int | None, str]], unit: str = "row", total: int | None = None):
        self.file, self.problems, self.unit = file, problems, unit
        self.line, self.reason = (problems[0][0] or 0, problems[0][1]) if problems else (0, "")
        total = len(problems) if total is None else total
        parts = [reason if row is None else f"{unit} {row}: {reason}" for row, reason in problems[:LISTED_PROBLEMS]]
        more = total - min(len(problems), LISTED_PROBLEMS)
        if more > 0:
            parts.append(f"and {more} more bad {unit}(s)")
        ValueError.__init__(self, f"{file} " + "; ".join(parts))


def columns_of(cfg: Any) -> dict[str, str]:
    """The column names a run config gives (the defaults where it has no such field)."""
    return {k: getattr(cfg, f"{k}_column", v) for k, v in DEFAULT_COLUMNS.items()}


# ------------------------------------------------------------------------------------------------ identity


def _walk(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in _walk(path)) if path.is_dir() else path.stat().st_size


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes; of a folder, of every file's relative path and SHA-256 in sorted order (so the
    same folder copied elsewhere has the same hash)."""
    path = Path(path)

    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in _walk(path):
        h.update(p.relative_to(path).as_posix().encode() + b"\x00" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def check_size(path: Path, limit: int | None = None) -> None:
    limit = MAX_BYTES if limit is None else limit
    size = size_of(path)
    if size > limit:
        raise UserFileError(str(path), [(None, f"is {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB limit "
                                              "for a dataset file: keep the rows you train on, or split the file")])


# ------------------------------------------------------------------------------------------------ reading


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def _read_hf_folder(path: Path) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: PLC0415  (heavy and optional: only a save_to_disk folder needs it)
    except ImportError:
        need = ("is a `datasets` folder, and reading one needs the 'datasets' package (pip install "
                "'bias-studio[hub]'), or save the data as Parquet")
        raise UserFileError(str(path), [(None, need)]) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged folder fails in many ways (missing arrow files, bad state.json)
        msg = " ".join(str(e).split())
        raise UserFileError(str(path), [(None, f"cannot be read as a `datasets` folder: {msg[:200]}")]) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise UserFileError(str(path), [(None, f"holds the splits {sorted(ds)} and none is 'train': save the one "
                                                   "to train on alone, or name it 'train'")])
    return ds.to_list()


def _read_table(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa  # noqa: PLC0415

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        return pq.read_table(path).to_pylist()
    import pyarrow.csv as pacsv  # noqa: PLC0415

    # CSV has no types: every column is read as text, and an empty cell as "" (reported as empty, not as null).
    names = pacsv.open_csv(path).schema.names
    opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False)
    return pacsv.read_csv(path, convert_options=opts).to_pylist()


def read_records(path: str | Path) -> tuple[list[tuple[int, Any]], str]:
    """((row number, record) for every row, unit) where unit is "line" for JSONL (its line numbers) and "row" for the
    other formats (the n-th record from 1, a CSV header not counted). Records are whatever the file holds; the
    row checks judge them."""
    p = Path(path)
    shown = str(p)
    if p.is_dir():
        if not _is_hf_folder(p):
            raise UserFileError(shown, [(None, "is a folder but not one written by `datasets`' save_to_disk (no "
                                               "dataset_info.json): give a .jsonl, .json, .csv or .parquet file")])
        return list(enumerate(_read_hf_folder(p), start=1)), "row"
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserFileError(shown, [(None, f"has the extension {p.suffix or '(none)'!r}: give a file ending in "
                                           f"{', '.join(SUFFIXES)}, or a `datasets` save_to_disk folder")])
    try:
        # JSON goes through the json module, not pyarrow: pyarrow refuses a column whose type changes between rows
        # ("changed from string to number in row 1", counting from an unstated origin), which is exactly the wrong
        # type the row checks must name by its line; the typed formats (Parquet, Arrow) go through pyarrow.
        if suffix == ".jsonl":
            return list(_jsonl(p)), "line"
        if suffix == ".json":
            return _json(p), "row"
        return list(enumerate(_read_table(p), start=1)), "row"
    except UnicodeDecodeError as e:
        raise UserFileError(shown, [(None, f"is not UTF-8 text (byte {e.start}): save it as UTF-8")]) from None
    except UserFileError:
        raise
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        msg = " ".join(str(e).split())
        raise UserFileError(shown, [(None, f"cannot be read as {suffix[1:].upper()}: {msg[:200]}")]) from None


def _jsonl(p: Path) -> Iterator[tuple[int, Any]]:
    with p.open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if raw.strip():
                try:
                    yield n, json.loads(raw)
                except json.JSONDecodeError as e:
                    yield n, _Unparsed(f"not valid JSON ({e.msg} at column {e.colno})")


def _json(p: Path) -> list[tuple[int, Any]]:
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserFileError(str(p), [(None, f"is not valid JSON ({e.msg} at line {e.lineno})")]) from None
    if not isinstance(doc, list):
        raise UserFileError(str(p), [(None, "must hold a JSON list of row objects ([{...}, {...}]); for one object "
                                            "per line use a .jsonl file")])
    return list(enumerate(doc, start=1))


class _Unparsed:
    """A JSONL line that is not JSON: reported by the row checks with the others."""

    def __init__(self, reason: str):
        self.reason = reason


# ------------------------------------------------------------------------------------------------ row checks


class _Bad(Exception):
    pass


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _messages(value: list[Any], column: str, roles: tuple[str, ...]) -> list[dict[str, str]]:
    if not value:
        raise _Bad(f"'{column}' is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _Bad(f"'{column}'[{i}] must be a message {{\"role\": ..., \"content\": ...}} with text values, "
                       f"got {_show(m)}")
        if m["role"] not in roles:
            raise _Bad(f"'{column}'[{i}] has the role {_show(m['role'])}: use one of {', '.join(roles)}")
        if not m["content"].strip():
            raise _Bad(f"'{column}'[{i}] has empty content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _prompt(row: Mapping[str, Any], column: str) -> tuple[str, list[dict[str, str]] | None]:
    value = row.get(column)
    if isinstance(value, str):
        if not value.strip():
            raise _Bad(f"empty prompt (column '{column}')")
        return value, None
    if _empty(value):
        raise _Bad(f"empty prompt (column '{column}')")
    if isinstance(value, list):
        msgs = _messages(value, column, ROLES)
        if msgs[-1]["role"] != "user":
            raise _Bad(f"'{column}' must end with a user message (the model answers it), ends with "
                       f"{msgs[-1]['role']!r}")
        return msgs[-1]["content"], msgs
    raise _Bad(f"'{column}' must be text or a list of {{role, content}} messages, got {_show(value)}")


def _answer(row: Mapping[str, Any], column: str) -> tuple[str, list[dict[str, str]] | None]:
    value = row.get(column)
    if isinstance(value, str) and value.strip():
        return value, None
    if _empty(value):
        raise _Bad(f"empty '{column}'")
    if isinstance(value, list):
        msgs = _messages(value, column, ("assistant",))
        return "\n".join(m["content"] for m in msgs), msgs
    raise _Bad(f"'{column}' must be text or a list of assistant messages, got {_show(value)}")


def _group(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if _empty(value):
        raise _Bad(f"no group (column '{column}' is missing or empty): give every row its group")
    if not isinstance(value, str):
        raise _Bad(f"group (column '{column}') must be text, got {_show(value)}: write it in quotes")
    return value.strip()


def parse_row(record: Any, kind: str, columns: Mapping[str, str]) -> PromptExample | PreferencePair:
    """One record as a row of `kind` ("prompts" or "pairs"); raises _Bad with the reason."""
    if isinstance(record, _Unparsed):
        raise _Bad(record.reason)
    if not isinstance(record, Mapping):
        raise _Bad(f"must be an object with named columns, got {_show(record)}")
    prompt, messages = _prompt(record, columns["prompt"])
    group = _group(record, columns["group"])
    key = json.dumps(messages) if messages is not None else prompt
    meta: dict[str, Any] = {"split_key": key}
    if messages is not None:
        meta["messages"] = messages
    if kind == "prompts":
        return PromptExample(prompt, group, SOURCE, meta)
    chosen, chosen_msgs = _answer(record, columns["chosen"])
    rejected, rejected_msgs = _answer(record, columns["rejected"])
    if chosen.strip() == rejected.strip():
        raise _Bad(f"'{columns['chosen']}' equals '{columns['rejected']}': a pair needs two different answers")
    if chosen_msgs is not None:
        meta["chosen_messages"] = chosen_msgs
    if rejected_msgs is not None:
        meta["rejected_messages"] = rejected_msgs
    return PreferencePair(prompt, chosen, rejected, group, SOURCE, meta)


def _needed(kind: str, columns: Mapping[str, str]) -> list[str]:
    keys = ("prompt", "group") if kind == "prompts" else ("prompt", "chosen", "rejected", "group")
    return [columns[k] for k in keys]


def load_rows(path: str | Path, kind: str, columns: Mapping[str, str] | None = None
              ) -> list[PromptExample] | list[PreferencePair]:
    """Every row of the file, or UserFileError naming the file and the first bad rows."""
    if kind not in ("prompts", "pairs"):
        raise ValueError(f"kind must be 'prompts' or 'pairs', got {kind!r}")
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    p = Path(path)
    if not p.exists():
        raise UserFileError(str(p), [(None, "does not exist: give the path of a dataset file on the engine machine")])
    check_size(p)
    records, unit = read_records(p)
    shown = str(p)
    if not records:
        raise UserFileError(shown, [(None, "has no rows")])
    if len(records) > MAX_ROWS:
        raise UserFileError(shown, [(None, f"has {len(records)} rows, over the limit of {MAX_ROWS}")])
    seen = {k for _, r in records if isinstance(r, Mapping) for k in r}
    missing = [c for c in _needed(kind, cols) if c not in seen]
    if missing and seen:
        have = ", ".join(sorted(map(str, seen))[:12])
        raise UserFileError(shown, [(None, f"has no column {', '.join(repr(c) for c in missing)} (its columns: "
                                           f"{have}): rename the column, or set the run's "
                                           f"{' / '.join(_setting(c, cols) for c in missing)} to the name it has")])
    rows: list[Any] = []
    problems: list[tuple[int | None, str]] = []
    bad = 0
    for n, record in records:
        try:
            rows.append(parse_row(record, kind, cols))
        except _Bad as e:
            bad += 1
            if len(problems) < LISTED_PROBLEMS:
                problems.append((n, str(e)))
    if bad:
        raise UserFileError(shown, problems, unit, total=bad)
    return rows


def _setting(column: str, cols: Mapping[str, str]) -> str:
    return next(f"{k}_column" for k, v in cols.items() if v == column)


def load_file_splits(path: str | Path, kind: str, *, columns: Mapping[str, str] | None = None, seed: int = 0,
                     limit: int | None = None) -> dict[str, list[Any]]:
    """The file's rows split train / validation / eval by prompt (the builders' rule: a prompt that appears in
    several pairs stays in one split, and the eval split is the same for every seed)."""
    from engine.data.builders import _finish_pairs, _log_report, _select, _split_rows, _effective_seed
    from engine.data.splits import DEFAULT_FRACTIONS

    rows = load_rows(path, kind, columns)
    _log_report(f"dataset file {path}", LoadReport(rows_ok=len(rows)))
    parts = _split_rows(rows, lambda r: r.meta["split_key"], seed, DEFAULT_FRACTIONS)
    out: dict[str, list[Any]] = {}
    for split, items in parts.items():
        if kind == "pairs":
            out[split] = _finish_pairs(items, split, seed, None, None, limit)
            continue
        picked = _select(items, seed=_effective_seed(split, seed), group_of=lambda e: e.group,
                         text_of=lambda e: e.meta["split_key"], groups=None, per_group=None, limit=limit)
        out[split] = [PromptExample(e.prompt, e.group, e.source, {**e.meta, "split": split}) for e in picked]
    return out


def summarize(path: str | Path, kind: str, columns: Mapping[str, str] | None = None, per_group: int = 2
              ) -> dict[str, Any]:
    """For the New run form: row count, rows per group, `per_group` example rows per group (file order), the hash."""
    rows = load_rows(path, kind, columns)
    counts: dict[str, int] = {}
    examples: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        counts[r.group] = counts.get(r.group, 0) + 1
        bucket = examples.setdefault(r.group, [])
        if len(bucket) < per_group:
            ex = {"prompt": r.prompt}
            if isinstance(r, PreferencePair):
                ex.update(chosen=r.chosen, rejected=r.rejected)
            bucket.append(ex)
    conversational = any("messages" in r.meta for r in rows)
    return {"rows": len(rows), "group_counts": dict(sorted(counts.items())), "examples": dict(sorted(examples.items())),
            "conversational": conversational, "sha256": content_hash(path)}


# ------------------------------------------------------------------------------------------------ storing


def datasets_dir() -> Path:
    from db.paths import studio_home

    return studio_home() / "datasets"


def store_copy(path: str | Path, digest: str | None = None) -> tuple[Path, str]:
    """Copy the file (or folder) to $STUDIO_HOME/datasets/<sha256>/<its name>, once per content; returns (the
    copy, the hash). The copy is what the run reads, so editing the original later cannot change a queued run."""
    import os
    import shutil
    import tempfile

    src = Path(path)
    digest = digest or content_hash(src)
    target_dir = datasets_dir() / digest
    target = target_dir / src.name
    if target.exists() and content_hash(target) == digest:
        return target, digest
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target_dir)) / src.name
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    if content_hash(tmp) != digest:
        shutil.rmtree(tmp.parent, ignore_errors=True)
        raise UserFileError(str(src), [(None, "changed while it was being copied: submit again once it is written")])
    if target.exists():  # a partial copy of an earlier, interrupted submit
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.replace(tmp, target)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return target, digest


def save_upload(name: str, data: bytes) -> Path:
    """A browser upload written to $STUDIO_HOME/datasets/uploads/<sha256>/<name> (the name stripped to its last part
    and checked for a supported extension); returns its path for the run's dataset_path."""
    safe = Path(name).name
    if Path(safe).suffix.lower() not in SUFFIXES or safe.startswith("."):
        raise UserFileError(safe or "(no name)", [(None, f"must be a file ending in {', '.join(SUFFIXES)}")])
    if len(data) > MAX_BYTES:
        raise UserFileError(safe, [(None, f"is over the {MAX_BYTES / 2**20:.0f} MiB limit for a dataset file")])
    folder = datasets_dir() / "uploads" / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / safe
    if not out.is_file() or out.read_bytes() != data:
        tmp = folder / f".{safe}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out)
    return out
