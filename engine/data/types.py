"""Row types shared by every loader and builder in engine.data (stdlib only: the app imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PromptExample:
    """One prompt for on-policy training (GRPO) or generation-based evaluation.

    `group` is the label the group-robust machinery and the per-group metrics key on (a demographic
    axis such as "gender", or a dataset category). `meta` must stay JSON-able: it is stored with samples.
    """

    prompt: str
    group: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair (chosen preferred over rejected for `prompt`), labelled with its group."""

    prompt: str
    chosen: str
    rejected: str
    group: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def chat_input(row: PromptExample | PreferencePair) -> str | list[dict[str, str]]:
    """What the model is given for a row: a conversational row's messages (rendered with the chat template as they
    are), else its prompt text (rendered as one user turn)."""
    return row.meta.get("messages") or row.prompt


class DataValidationError(ValueError):
    """A data file (or one row of it) does not have the expected layout.

    The message always names the file and line, e.g.
    "bbq/Age.jsonl line 17: field 'label' must be 0, 1 or 2, got 5".
    """

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file} line {line}: {reason}")


class DatasetUnavailableError(RuntimeError):
    """A dataset cannot be obtained here (not bundled, no path given, or the hub is unreachable)."""


@dataclass
class LoadReport:
    """What a loader read: how many rows were accepted and which rows were rejected and why."""

    rows_ok: int = 0
    malformed: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)

    def add_malformed(self, file: str, line: int, reason: str) -> None:
        self.malformed.append((file, line, reason))

    def merge(self, other: LoadReport) -> None:
        self.rows_ok += other.rows_ok
        self.malformed.extend(other.malformed)

    @property
    def ok(self) -> bool:
        return not self.malformed

    def summary(self, max_lines: int = 10) -> str:
        """Human-readable report for logs and the app: counts plus the first malformed rows."""
        head = f"{self.rows_ok} rows ok, {len(self.malformed)} malformed"
        lines = [f"  {f} line {n}: {why}" for f, n, why in self.malformed[:max_lines]]
        if len(self.malformed) > max_lines:
            lines.append(f"  ... and {len(self.malformed) - max_lines} more")
        return "\n".join([head, *lines])
