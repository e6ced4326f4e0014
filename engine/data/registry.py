"""Dataset registry: named datasets with JSON-able descriptions and one way to load each.

The app lists DATASETS in forms and calls preview(); the engine calls load_named() with the run's
split and seed. Torch-free and cheap to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.data import user_file
from engine.data.builders import build_pair_splits, build_prompt_splits, collect_load_reports, group_counts
from engine.data.global_opinion_qa import PAPER_COUNTRIES
from engine.data.splits import check_split
from engine.data.types import LoadReport, PreferencePair, PromptExample

Kind = Literal["prompts", "pairs"]
# train / validation / eval shares of the GlobalOpinionQA questions: the paper holds out 20% (train_frac 0.8)
GOQA_FRACTIONS = (0.7, 0.1, 0.2)
Rows = list[PromptExample] | list[PreferencePair]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: Kind  # "prompts" (GRPO / generation eval) | "pairs" (DPO / IPO and group-robust variants)
    description: str
    default_for: tuple[str, ...]  # algorithm names that use this set by default
    license: str
    source: str  # builder source name
    groups: str  # what a group is, for the UI
    needs_path: bool = False  # True when nothing is bundled: the user must give a file or hub id
    # Preference runs also score greedy answers to the held-out prompts with the bias reward; False where that
    # reward says nothing about the answers (GlobalOpinionQA's are option letters), so only the pair metrics run.
    heldout_reward: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # builder keyword arguments

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["default_for"] = list(self.default_for)
        d["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return d


def _spec(*args: Any, **kwargs: Any) -> tuple[str, DatasetSpec]:
    spec = DatasetSpec(*args, **kwargs)
    return spec.name, spec


DATASETS: dict[str, DatasetSpec] = dict(
    [
        _spec(
            "bias_prompts",
            "prompts",
            "Open-ended prompts about people: BOLD sentence continuations and HolisticBias dialogue openers, "
            "grouped by demographic axis (gender, race, religion, age, disability, sexual orientation).",
            ("grpo", "gr_grpo"),
            "CC BY-SA 4.0 (BOLD; HolisticBias)",
            "mixed",
            "demographic axis",
            options={"per_group": 256},
        ),
        _spec(
            "bold_prompts",
            "prompts",
            "BOLD sentence beginnings about people (Wikipedia), continued by the model; groups = domain axis.",
            (),
            "CC BY-SA 4.0",
            "bold",
            "demographic axis (BOLD domain)",
        ),
        _spec(
            "holistic_bias_prompts",
            "prompts",
            "HolisticBias dialogue openers composed from descriptors, nouns and templates; groups = axis.",
            (),
            "CC BY-SA 4.0",
            "holistic_bias",
            "demographic axis",
            options={"per_group": 256},
        ),
        _spec(
            "bbq_ambiguous_prompts",
            "prompts",
            "BBQ questions whose context cannot answer them (the unbiased answer is 'unknown'); "
            "groups = BBQ category. Meta holds the correct / unknown / bias-aligned option for rule rewards.",
            (),
            "CC BY 4.0",
            "bbq_ambiguous",
            "BBQ category",
            options={"group_by": "category"},
        ),
        _spec(
            "bbq_pairs",
            "pairs",
            "BBQ preference pairs: the unbiased answer ('unknown' when the context is ambiguous) over the "
            "stereotyped one; groups = BBQ category.",
            ("dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo"),
            "CC BY 4.0",
            "bbq",
            "BBQ category",
        ),
        _spec(
            "goqa_pairs",
            "pairs",
            "GlobalOpinionQA pairs as in Group Robust Preference Optimization: a country's majority answer over "
            "a random other option, as an option letter; groups = countries (the paper's first five). Bundled: a "
            "small non-canonical sample (about 300 rows for these countries); 20% of the questions are held out, as "
            "in the paper's 80/20 split. For the full set give a local file or the hub id "
            "Anthropic/llm_global_opinions.",
            (),
            "CC BY-NC-SA 4.0 (non-commercial)",
            "global_opinion_qa",
            "country",
            heldout_reward=False,
            options={"countries": PAPER_COUNTRIES[:5], "fractions": GOQA_FRACTIONS},
        ),
        _spec(
            "prompts_file",
            "prompts",
            "Your own prompts: a JSONL, JSON, CSV or Parquet file, or a `datasets` save_to_disk folder, with a "
            "prompt column (text, or a list of {role, content} messages) and a group column. Set dataset_path.",
            (),
            "yours",
            "file",
            "the file's group column",
            needs_path=True,
        ),
        _spec(
            "pairs_file",
            "pairs",
            "Your own preference pairs: a JSONL, JSON, CSV or Parquet file, or a `datasets` save_to_disk folder, "
            "with prompt, chosen and rejected columns (text, or conversational messages) and a group column. Set "
            "dataset_path.",
            (),
            "yours",
            "file",
            "the file's group column",
            needs_path=True,
        ),
    ]
)


def is_file_dataset(name: str) -> bool:
    """A dataset read from the user's own file (copied and hashed at submit), not one of the bundled benchmarks."""
    spec = DATASETS.get(name)
    return spec is not None and spec.source == "file"


def dataset_args(cfg: Any) -> dict[str, Any]:
    """The path and column names a run config gives its dataset, as load_named* take them."""
    return {"path": cfg.dataset_path, "columns": user_file.columns_of(cfg) if is_file_dataset(cfg.dataset) else None}


def catalog() -> list[dict[str, Any]]:
    """Every dataset's JSON-able description, for the app's dataset page."""
    return [spec.to_dict() for spec in DATASETS.values()]


def _unknown(name: str) -> KeyError:
    return KeyError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")


def _mixed_paths(name: str, root: Path) -> dict[str, Path]:
    """A mixed set's path is a folder holding one subfolder per source (bold/, holistic_bias/)."""
    paths = {src: root / src for src in ("bold", "holistic_bias")}
    missing = [str(p) for p in paths.values() if not p.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"dataset {name!r} mixes BOLD and HolisticBias: its path must be a folder with subfolders "
            f"bold/ and holistic_bias/; missing {missing}"
        )
    return paths


def load_named_splits(
    name: str, seed: int = 0, path: str | Path | None = None, limit: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> dict[str, Rows]:
    """All splits of a named dataset (each capped at `limit` rows, balanced over groups). `columns` names the
    columns of a file dataset (prompts_file, pairs_file)."""
    if name not in DATASETS:
        raise _unknown(name)
    spec = DATASETS[name]
    if spec.needs_path and path is None:
        if spec.source == "file":
            raise ValueError(f"dataset {name!r} is read from your own file: set dataset_path to it")
        raise ValueError(f"dataset {name!r} is not bundled ({spec.license}); pass path= a local file or hub id")
    if spec.source == "file":
        return user_file.load_file_splits(path, spec.kind, columns=columns, seed=seed, limit=limit)
    builder: Callable[..., dict[str, Any]] = build_prompt_splits if spec.kind == "prompts" else build_pair_splits
    kwargs = {**spec.options, "seed": seed, "limit": limit}
    if path is not None:
        kwargs["path"] = _mixed_paths(name, Path(path)) if spec.source == "mixed" else path
    return builder(spec.source, **kwargs)


def load_named(
    name: str, split: str = "train", seed: int = 0, path: str | Path | None = None, limit: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> Rows:
    """Rows of one split of a named dataset. The "eval" split is the same for every seed."""
    check_split(split)
    return load_named_splits(name, seed=seed, path=path, limit=limit, columns=columns)[split]


def load_named_splits_with_report(
    name: str, seed: int = 0, path: str | Path | None = None, limit: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> tuple[dict[str, Rows], LoadReport]:
    """load_named_splits plus what the loaders skipped (every malformed row with file, line and reason)."""
    with collect_load_reports() as report:
        splits = load_named_splits(name, seed=seed, path=path, limit=limit, columns=columns)
    return splits, report


def _preview_text(row: PromptExample | PreferencePair) -> str:
    if isinstance(row, PreferencePair):
        return f"{row.prompt}\n[chosen] {row.chosen}\n[rejected] {row.rejected}"
    return row.prompt


def preview(
    name: str, seed: int = 0, per_group: int = 3, path: str | Path | None = None, split: str = "train"
) -> dict[str, Any]:
    """JSON-able summary for the app: row count, rows per group and a few example texts per group."""
    splits = load_named_splits(name, seed=seed, path=path)
    rows = splits[check_split(split)]
    examples: dict[str, list[str]] = {}
    for row in rows:
        bucket = examples.setdefault(row.group, [])
        if len(bucket) < per_group:
            bucket.append(_preview_text(row))
    return {
        "name": name,
        "split": split,
        "rows": len(rows),
        "split_rows": {s: len(r) for s, r in splits.items()},
        "group_counts": group_counts(rows),
        "examples": dict(sorted(examples.items())),
        "spec": DATASETS[name].to_dict(),
    }
