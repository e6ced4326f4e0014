"""The evaluation harness: bias benchmarks and a knowledge-retention check on one causal LM.

Benchmarks (names as in EvalConfig.benchmarks):
- "bbq": the held-out eval split of the bundled BBQ subset (the split bbq_pairs never trains on). Each of the
  three answers is scored by its per-token log-likelihood after a plain prompt
  "{context} {question}\\nAnswer:" (no chat template, so base and instruct models read the same text, and
  per-token means keep long answers such as "Can't be determined" from losing on length alone);
  the highest-scoring option is the model's answer. Accuracy (ambiguous / disambiguated) and bias scores.
- "crows_pairs": whole-sentence log-likelihood (sum over tokens, after the start token) of both sentences of
  a minimal pair; the stereotype score. Per bias type.
- "stereoset": intrasentence items; each option is a whole sentence scored by per-token log-likelihood (as
  StereoSet scores GPT-2); SS, LMS, ICAT. Per bias type.
- "reward": greedy answers to held-out open prompts ("bias_prompts" eval split) scored by the bias reward;
  mean per demographic group.
- "perplexity": perplexity on bundled neutral passages (engine/evaluation/data); with BBQ disambiguated
  accuracy this is the knowledge-retention check.
`limit` caps the items of each benchmark, balanced over its groups and chosen with `seed`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.evaluation import metrics as M

BENCHMARKS = ("bbq", "crows_pairs", "stereoset", "reward", "perplexity")
NEUTRAL_TEXT = Path(__file__).resolve().parent / "data" / "neutral_passages.jsonl"
BBQ_PROMPT = "{context} {question}\nAnswer:"
T = TypeVar("T")


@dataclass
class BenchmarkResult:
    benchmark: str
    metrics: dict[str, float]
    dataset_version: str
    seconds: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few scored items, for reports


@dataclass
class EvalSettings:
    limit: int = 200  # items per benchmark; 0 = all
    seed: int = 0
    token_budget: int = 4096  # tokens per scoring batch (rows * longest row)
    reward: str = "bias_rm"
    max_new_tokens: int = 48
    generation_batch: int = 16
    device: str = "auto"
    progress: bool = True


# ------------------------------------------------------------------------------------------------ helpers
class Progress:
    """tqdm when installed (transformers brings it), else a line per 10% on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.done, self._bar, self._last = total, desc, 0, None, -1
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, leave=True)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self.total:
            tenth = 10 * self.done // self.total
            if tenth != self._last:
                self._last = tenth
                print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _version(name: str, files: Sequence[Path], settings: EvalSettings, extra: str = "") -> str:
    """Dataset version: content hash of the files read, plus what chose the items (limit, seed)."""
    tail = f";{extra}" if extra else ""
    return f"{name}@sha256:{_digest(*files)};limit={settings.limit or 'all'};seed={settings.seed}{tail}"


def balanced_sample(items: Sequence[T], group_of: Callable[[T], str], key_of: Callable[[T], str], limit: int,
                    seed: int) -> list[T]:
    """Up to `limit` items, round-robin over groups, each group in a seeded hash order (0 = all)."""
    if not limit or limit >= len(items):
        return list(items)
    by_group: dict[str, list[T]] = defaultdict(list)
    for it in items:
        by_group[group_of(it)].append(it)
    for members in by_group.values():
        members.sort(key=lambda x: hashlib.sha256(f"{seed}\x00{key_of(x)}".encode()).hexdigest())
    out: list[T] = []
    queues = [by_group[g] for g in sorted(by_group)]
    depth = 0
    while len(out) < limit:
        for q in queues:
            if depth < len(q) and len(out) < limit:
                out.append(q[depth])
        depth += 1
    return out


def _score(policy: Any, requests: list[tuple[list[int], list[int]]], settings: EvalSettings, desc: str):
    from engine.evaluation.scoring import score_continuations

    bar = Progress(len(requests), desc, settings.progress)
    try:
        return score_continuations(policy.model, requests, pad_id=policy.tokenizer.pad_token_id,
                                   token_budget=settings.token_budget, progress=bar.update)
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------- benchmarks
def bbq_items(settings: EvalSettings) -> tuple[list[Any], list[Path]]:
    """BBQ rows of the fixed held-out eval split, balanced over (category, context condition)."""
    from engine.data.bbq import bbq_files, load_bbq
    from engine.data.splits import split_examples

    rows, _ = load_bbq()
    held_out = split_examples(rows, seed=0, key=lambda r: r.split_key)["eval"]
    picked = balanced_sample(held_out, lambda r: f"{r.category}/{r.context_condition}",
                             lambda r: f"{r.file}:{r.example_id}", settings.limit, settings.seed)
    return picked, bbq_files(None, None)


def run_bbq(policy: Any, settings: EvalSettings) -> BenchmarkResult:
    from engine.evaluation.scoring import encode_continuation

    items, files = bbq_items(settings)
    requests = []
    for r in items:
        prompt = BBQ_PROMPT.format(context=r.context, question=r.question)
        requests.extend(encode_continuation(policy.tokenizer, prompt, " " + a) for a in r.answers)
    scores = _score(policy, requests, settings, "bbq")
    preds = []
    examples = []
    for i, r in enumerate(items):
        option = [s.mean for s in scores[3 * i: 3 * i + 3]]
        choice = M.pick_option(option)
        preds.append(M.BBQPrediction(r.category, r.context_condition, r.label, r.unknown_index, r.biased_index, choice))
        if len(examples) < 5:
            examples.append({"question": r.question, "answers": list(r.answers), "label": r.label, "picked": choice})
    return BenchmarkResult("bbq", M.bbq_report(preds), _version("bbq", files, settings, "split=eval"), examples=examples)


def run_crows_pairs(policy: Any, settings: EvalSettings) -> BenchmarkResult:
    from engine.data._rows import resolve_path
    from engine.data.crows_pairs import load_crows_pairs
    from engine.evaluation.scoring import encode_sentence

    rows, _ = load_crows_pairs()
    items = balanced_sample(rows, lambda r: r.bias_type, lambda r: str(r.pair_id), settings.limit, settings.seed)
    requests = []
    for r in items:
        requests += [encode_sentence(policy.tokenizer, r.sent_more), encode_sentence(policy.tokenizer, r.sent_less)]
    scores = _score(policy, requests, settings, "crows_pairs")
    pairs = [M.PairScore(r.bias_type, r.stereo_antistereo, scores[2 * i].logprob, scores[2 * i + 1].logprob)
             for i, r in enumerate(items)]
    file = resolve_path(None, "crows_pairs/crows_pairs_anonymized.csv")
    return BenchmarkResult("crows_pairs", M.crows_pairs_scores(pairs), _version("crows_pairs", [file], settings))


def run_stereoset(policy: Any, settings: EvalSettings) -> BenchmarkResult:
    from engine.data._rows import resolve_path
    from engine.data.stereoset import load_stereoset
    from engine.evaluation.scoring import encode_sentence

    rows, _ = load_stereoset(types=["intrasentence"])
    items = balanced_sample(rows, lambda r: r.bias_type, lambda r: f"{r.file}:{r.line}", settings.limit, settings.seed)
    requests = []
    for r in items:
        requests += [encode_sentence(policy.tokenizer, s) for s in (r.stereotype, r.anti_stereotype, r.unrelated)]
    scores = _score(policy, requests, settings, "stereoset")
    trip = [M.TripletScore(r.bias_type, *(s.mean for s in scores[3 * i: 3 * i + 3])) for i, r in enumerate(items)]
    file = resolve_path(None, "stereoset/stereoset_dev_flat.jsonl")
    return BenchmarkResult("stereoset", M.stereoset_scores(trip),
                           _version("stereoset", [file], settings, "intrasentence"))


def neutral_passages(path: Path = NEUTRAL_TEXT) -> list[str]:
    texts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise ValueError(f"{path.name} line {lineno}: field 'text' must be a non-empty string")
            texts.append(row["text"])
    return texts


def run_perplexity(policy: Any, settings: EvalSettings) -> BenchmarkResult:
    from engine.evaluation.scoring import encode_sentence

    texts = neutral_passages()
    if settings.limit:
        texts = texts[: settings.limit]
    scores = _score(policy, [encode_sentence(policy.tokenizer, t) for t in texts], settings, "perplexity")
    total_lp, total_n = sum(s.logprob for s in scores), sum(s.n_tokens for s in scores)
    out = {"perplexity": M.perplexity(total_lp, total_n), "nll_per_token": -total_lp / total_n,
           "tokens": float(total_n), "n": float(len(texts))}
    return BenchmarkResult("perplexity", out, _version("neutral_passages", [NEUTRAL_TEXT], settings))


def held_out_prompts(dataset: str, limit: int, seed: int) -> list[Any]:
    """Prompts of a named dataset's fixed eval split (pairs give their prompt), balanced over groups."""
    from engine.data.registry import load_named

    rows = load_named(dataset, split="eval", seed=seed)
    return balanced_sample(rows, lambda r: r.group, lambda r: r.prompt, limit, seed)


def generate_greedy(policy: Any, prompts: list[str], settings: EvalSettings, desc: str = "generate") -> list[str]:
    from engine.sampling.base import make_sampler

    sampler = make_sampler("hf", policy.model_path, policy)
    bar = Progress(len(prompts), desc, settings.progress)
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), settings.generation_batch):
            chunk = prompts[start: start + settings.generation_batch]
            batch = sampler.generate(chunk, n=1, max_new_tokens=settings.max_new_tokens, greedy=True,
                                     seed=settings.seed)
            texts.extend(batch.texts)
            bar.update(len(chunk))
    finally:
        bar.close()
        sampler.close()
    return texts


def run_reward(policy: Any, settings: EvalSettings) -> BenchmarkResult:
    from engine.rewards.base import build_reward

    rows = held_out_prompts("bias_prompts", settings.limit, settings.seed)
    prompts = [r.prompt for r in rows]
    completions = generate_greedy(policy, prompts, settings, "reward: generate")
    reward = build_reward([{"name": settings.reward}], device=settings.device if settings.device != "auto" else "cpu")
    try:
        values = reward(prompts, completions).total
    finally:
        reward.close()
    out = M.reward_scores(values, [r.group for r in rows])
    examples = [{"group": r.group, "prompt": p, "completion": c, "reward": v}
                for r, p, c, v in list(zip(rows, prompts, completions, values))[:5]]
    version = f"bias_prompts:eval;limit={settings.limit or 'all'};seed={settings.seed};reward={settings.reward};" \
              f"max_new_tokens={settings.max_new_tokens};greedy"
    return BenchmarkResult("reward", out, version, examples=examples)


RUNNERS: dict[str, Callable[[Any, EvalSettings], BenchmarkResult]] = {
    "bbq": run_bbq, "crows_pairs": run_crows_pairs, "stereoset": run_stereoset, "reward": run_reward,
    "perplexity": run_perplexity,
}


def check_benchmarks(names: Sequence[str]) -> list[str]:
    from engine.config import ConfigError

    if not names:
        raise ConfigError({"benchmarks": f"is empty: choose some of {', '.join(BENCHMARKS)}"})
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ConfigError({"benchmarks": f"unknown benchmark(s) {', '.join(unknown)}: use {', '.join(BENCHMARKS)}"})
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------------------------------------- driver
def load_eval_policy(model_path: str, device: str = "auto") -> Any:
    from engine.models.loading import load_policy

    policy = load_policy(model_path, device=device, need_reference=False)
    policy.model.eval()  # load_policy hands back a training-mode model; dropout must be off to score
    policy.model.requires_grad_(False)
    return policy


def evaluate_policy(policy: Any, benchmarks: Sequence[str], settings: EvalSettings,
                    on_result: Callable[[BenchmarkResult], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> list[BenchmarkResult]:
    """Run the benchmarks in order; on_result sees each as soon as it is done (store it then, not at the end)."""
    import torch

    results = []
    for name in check_benchmarks(benchmarks):
        if should_stop is not None and should_stop():
            break
        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        res = RUNNERS[name](policy, settings)
        res.seconds = time.perf_counter() - t0
        res.metrics["seconds"] = res.seconds
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


def evaluate_model(model_path: str, benchmarks: Sequence[str], settings: EvalSettings | None = None,
                   on_result: Callable[[BenchmarkResult], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> list[BenchmarkResult]:
    settings = settings or EvalSettings()
    check_benchmarks(benchmarks)
    policy = load_eval_policy(model_path, settings.device)
    try:
        return evaluate_policy(policy, benchmarks, settings, on_result, should_stop)
    finally:
        del policy
        gc.collect()


HEADLINE = {"bbq": ("acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig"),
            "crows_pairs": ("stereotype_score",), "stereoset": ("ss", "lms", "icat"),
            "reward": ("mean", "worst_group"), "perplexity": ("perplexity",)}


def headline(res: BenchmarkResult) -> dict[str, float]:
    return {k: res.metrics[k] for k in HEADLINE.get(res.benchmark, ()) if k in res.metrics}


def format_results(results: Sequence[BenchmarkResult]) -> str:
    lines = []
    for r in results:
        parts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
                          for k, v in headline(r).items())
        lines.append(f"{r.benchmark:<12} {parts}  ({r.seconds:.0f} s)")
    return "\n".join(lines)


def evaluate_cli(store: Any, model_or_run: str, benchmarks: Sequence[str], limit: int = 200, seed: int = 0,
                 **settings_kw: Any) -> list[int]:
    """`studio eval`: evaluate, store one Evaluation row per benchmark, print a summary; returns the row ids.

    Results for a run's checkpoint are stored under that run (with its step and checkpoint folder).
    """
    from db.writes import record_evaluation
    from engine.evaluation.models_ref import resolve_model_ref

    names = check_benchmarks(benchmarks)
    if limit < 0:
        from engine.config import ConfigError

        raise ConfigError({"limit": f"must be 0 (all) or a positive number, got {limit}"})
    model = resolve_model_ref(store, model_or_run)
    settings = EvalSettings(limit=limit, seed=seed, **settings_kw)
    ids: list[int] = []
    print(f"evaluating {model.label} ({model.path}) on {', '.join(names)}; limit {limit or 'all'}, seed {seed}",
          file=sys.stderr)

    def store_result(res: BenchmarkResult) -> None:
        ids.append(record_evaluation(store, run_id=model.run_id, model=model.label, benchmark=res.benchmark,
                                     dataset_version=res.dataset_version, metrics=res.metrics, seed=seed,
                                     step=model.step, checkpoint=model.checkpoint))
        print(format_results([res]), flush=True)

    evaluate_model(model.path, names, settings, on_result=store_result)
    print(f"stored {len(ids)} evaluation(s): ids {', '.join(map(str, ids))}", flush=True)
    return ids
