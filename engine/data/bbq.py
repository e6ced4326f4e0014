"""BBQ (Parrish et al., 2022): hand-built bias benchmark for QA, one jsonl file per category.

Bundled: a deterministic subset of 6 of the 11 categories (see bundled/bbq/SOURCE.md). The full
upstream `data/` folder (all 11 files) loads from a user path with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.data._rows import (
    RowProblem,
    RowSink,
    display_name,
    iter_jsonl,
    parse_json_object,
    req,
    req_choice,
    req_dict,
    req_int,
    req_str,
    req_str_list,
    resolve_path,
)
from engine.data.types import LoadReport

ANSWER_KEYS = ("ans0", "ans1", "ans2")

# Group tags in answer_info that do not literally equal an entry of stereotyped_groups in the
# categories missing from the bundle (upstream's analysis script maps these by hand).
_TAG_ALIASES: dict[str, tuple[str, ...]] = {
    "f": ("women", "woman", "girls", "girl", "f", "trans_f", "trans"),
    "m": ("men", "man", "boys", "boy", "m", "trans_m", "trans"),
    "lowses": ("low ses", "lowses"),
    "highses": ("high ses", "highses"),
}


@dataclass(frozen=True)
class BBQExample:
    category: str
    example_id: int
    question_index: str
    question_polarity: str  # "neg" (question targets the stereotype) | "nonneg"
    context_condition: str  # "ambig" (answer is always UNKNOWN) | "disambig"
    context: str
    question: str
    answers: tuple[str, str, str]
    label: int
    answer_tags: tuple[str, str, str]  # group tag per answer; "unknown" marks the UNKNOWN option
    stereotyped_groups: tuple[str, ...]
    subcategory: str
    unknown_index: int
    target_index: int | None  # answer naming the stereotyped group (None: tags did not match)
    file: str
    line: int

    @property
    def biased_index(self) -> int | None:
        """The bias-aligned answer (BBQ bias score): the target for a negative question, the other
        (non-target, non-unknown) person for a non-negative one."""
        if self.target_index is None:
            return None
        if self.question_polarity == "neg":
            return self.target_index
        others = [i for i in range(3) if i not in (self.target_index, self.unknown_index)]
        return others[0]

    @property
    def split_key(self) -> str:
        # question_index is the template: all its fills are near-duplicates and must share a split.
        return f"bbq/{self.category}/{self.question_index}"


def _matches(tag: str, surface: str, stereotyped: Sequence[str]) -> bool:
    wanted = {s.lower() for s in stereotyped}
    candidates = {tag.lower(), surface.lower(), *_TAG_ALIASES.get(tag.lower(), ())}
    # Race_x_gender tags look like "F-Black": match either half.
    candidates.update(part.lower() for part in tag.split("-"))
    return bool(candidates & wanted)


def parse_bbq_row(obj: dict) -> dict:
    """Validate one BBQ row; returns the fields of a BBQExample (minus file/line)."""
    example_id = req_int(obj, "example_id", minimum=0)
    qindex = req(obj, "question_index")
    if isinstance(qindex, bool) or not isinstance(qindex, (str, int)) or str(qindex).strip() == "":
        raise RowProblem(f"field 'question_index' must be a template id (string), got {qindex!r}")
    polarity = req_choice(obj, "question_polarity", ("neg", "nonneg"))
    condition = req_choice(obj, "context_condition", ("ambig", "disambig"))
    category = req_str(obj, "category")
    context = req_str(obj, "context")
    question = req_str(obj, "question")
    answers = tuple(req_str(obj, k) for k in ANSWER_KEYS)
    label = req_int(obj, "label", allowed=(0, 1, 2))
    info = req_dict(obj, "answer_info")
    tags: list[str] = []
    surfaces: list[str] = []
    for k in ANSWER_KEYS:
        entry = req_str_list(info.get(k), f"answer_info['{k}']", min_len=2)
        surfaces.append(entry[0])
        tags.append(entry[1])
    unknown = [i for i, t in enumerate(tags) if t == "unknown"]
    if len(unknown) != 1:
        raise RowProblem(f"answer_info must tag exactly one answer 'unknown', found {len(unknown)}")
    if condition == "ambig" and label != unknown[0]:
        raise RowProblem(
            f"ambiguous-context example must be labelled with the UNKNOWN answer (ans{unknown[0]}), got label {label}"
        )
    meta = req_dict(obj, "additional_metadata")
    stereotyped = req_str_list(meta.get("stereotyped_groups"), "additional_metadata['stereotyped_groups']", min_len=1)
    targets = [i for i in range(3) if i != unknown[0] and _matches(tags[i], surfaces[i], stereotyped)]
    return dict(
        category=category,
        example_id=example_id,
        question_index=str(qindex),
        question_polarity=polarity,
        context_condition=condition,
        context=context,
        question=question,
        answers=answers,
        label=label,
        answer_tags=tuple(tags),
        stereotyped_groups=tuple(stereotyped),
        subcategory=str(meta.get("subcategory", "None")),
        unknown_index=unknown[0],
        # Two matching answers (both people in the stereotyped group) give no usable target.
        target_index=targets[0] if len(targets) == 1 else None,
    )


def bbq_files(path_or_dir: str | Path | None, categories: Sequence[str] | None) -> list[Path]:
    root = resolve_path(path_or_dir, "bbq")
    if root.is_file():
        files = [root]
    else:
        if (root / "data").is_dir():
            root = root / "data"  # the upstream repo root (and the bundle) keep the files in data/
        files = sorted(root.glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"{root}: no BBQ *.jsonl files (expected e.g. Age.jsonl, Religion.jsonl)")
    if categories is not None:
        by_stem = {f.stem: f for f in files}
        missing = [c for c in categories if c not in by_stem]
        if missing:
            hint = (
                " The bundled subset has 6 of BBQ's 11 categories; pass the upstream data/ folder for the rest."
                if path_or_dir is None
                else ""
            )
            raise FileNotFoundError(
                f"BBQ categories {missing} not found in {root}; available: {sorted(by_stem)}.{hint}"
            )
        files = [by_stem[c] for c in categories]
    return files


def load_bbq(
    path_or_dir: str | Path | None = None,
    categories: Sequence[str] | None = None,
    strict: bool = False,
) -> tuple[list[BBQExample], LoadReport]:
    """Load BBQ jsonl rows from the bundled subset (None), a folder of category files, or one file.

    Malformed rows are reported (file, line, reason) in the LoadReport; strict=True raises on the first.
    """
    report = LoadReport()
    sink = RowSink(report, strict)
    rows: list[BBQExample] = []
    for file in bbq_files(path_or_dir, categories):
        name = display_name(file)
        seen_ids: dict[int, int] = {}
        for lineno, text in iter_jsonl(file):
            try:
                fields = parse_bbq_row(parse_json_object(text))
                first = seen_ids.setdefault(fields["example_id"], lineno)
                if first != lineno:
                    raise RowProblem(f"duplicate example_id {fields['example_id']} (first on line {first})")
            except RowProblem as problem:
                sink.bad(name, lineno, str(problem))
                continue
            rows.append(BBQExample(**fields, file=name, line=lineno))
            sink.ok()
    return rows, report
