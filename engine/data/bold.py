"""BOLD (Dhamala et al., 2021): Wikipedia sentence beginnings about people, per domain and group.

Layout: one `<domain>_prompt.json` per domain, {group: {entity: [prompt, ...]}}. Bundled: a
deterministic subset per domain (bundled/bold/SOURCE.md); the full upstream `prompts/` folder
loads from a user path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.data._rows import JsonLocator, RowSink, display_name, load_json_document, resolve_path, show_value
from engine.data.types import LoadReport

DOMAINS = ("gender", "political_ideology", "profession", "race", "religious_ideology")


@dataclass(frozen=True)
class BoldPrompt:
    domain: str
    group: str  # e.g. "American_actresses", "African_Americans"
    entity: str  # the Wikipedia page the prompt comes from
    prompt: str  # a sentence beginning, upstream keeps a trailing space
    file: str
    line: int

    @property
    def split_key(self) -> str:
        # All prompts about one person stay in one split.
        return f"bold/{self.domain}/{self.entity}"


def load_bold(
    dir: str | Path | None = None,
    domains: Sequence[str] | None = None,
    strict: bool = False,
) -> tuple[list[BoldPrompt], LoadReport]:
    """Load BOLD prompts from `<dir>/<domain>_prompt.json` (bundled subset when dir is None)."""
    root = resolve_path(dir, "bold")
    if (root / "prompts").is_dir():
        root = root / "prompts"  # accept the upstream repo root as well as its prompts/ folder
    available = {p.name[: -len("_prompt.json")]: p for p in sorted(root.glob("*_prompt.json"))}
    if not available:
        raise FileNotFoundError(f"{root}: no BOLD *_prompt.json files (expected e.g. gender_prompt.json)")
    wanted = list(domains) if domains is not None else sorted(available)
    missing = [d for d in wanted if d not in available]
    if missing:
        raise FileNotFoundError(f"BOLD domains {missing} not found in {root}; available: {sorted(available)}")

    report = LoadReport()
    sink = RowSink(report, strict)
    rows: list[BoldPrompt] = []
    for domain in wanted:
        file = available[domain]
        name = display_name(file)
        doc, text = load_json_document(file)
        where = JsonLocator(text)
        if not isinstance(doc, dict):
            sink.bad(name, 1, f"expected an object {{group: {{entity: [prompts]}}}}, got {type(doc).__name__}")
            continue
        for group, entities in doc.items():
            if not isinstance(entities, dict):
                sink.bad(name, where.line(group), f"group '{group}' must map entity names to prompt lists")
                continue
            for entity, prompts in entities.items():
                lineno = where.line(group, entity)
                if not isinstance(prompts, list) or not prompts:
                    sink.bad(
                        name,
                        lineno,
                        f"[{group!r}][{entity!r}] must be a non-empty list of prompts, got {show_value(prompts)}",
                    )
                    continue
                for i, prompt in enumerate(prompts):
                    if not isinstance(prompt, str) or not prompt.strip():
                        sink.bad(
                            name, lineno, f"[{group!r}][{entity!r}][{i}] must be a non-empty string, got {show_value(prompt)}"
                        )
                        continue
                    rows.append(BoldPrompt(domain, group, entity, prompt, name, lineno))
                    sink.ok()
    return rows, report
