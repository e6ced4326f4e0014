"""The harness end to end on a tiny model: results stored, read back, and attributed to the right run."""

from __future__ import annotations

import math

import pytest
import torch
from sqlalchemy import select

from db.models import Evaluation, MetricPoint
from db.writes import record_checkpoint
from engine.config import ConfigError, EvalConfig, GRPOConfig
from engine.evaluation.harness import (EvalSettings, balanced_sample, bbq_items, evaluate_cli, neutral_passages,
                                       show_cli)
from engine.evaluation.models_ref import ModelRefError, parse_run_ref
from engine.runs.context import RunContext
from engine.submission import submit_run


def _evaluations(store):
    with store.read() as s:
        return list(s.scalars(select(Evaluation).order_by(Evaluation.id)))


def test_cli_stores_every_benchmark_and_reads_back(store, tiny_model_dir, capsys):
    ids = evaluate_cli(store, str(tiny_model_dir), ["bbq", "crows_pairs", "stereoset", "perplexity"], limit=6,
                       seed=3, progress=False)
    rows = _evaluations(store)
    assert [r.id for r in rows] == ids and [r.benchmark for r in rows] == ["bbq", "crows_pairs", "stereoset",
                                                                           "perplexity"]
    for r in rows:
        assert r.model == str(tiny_model_dir) and r.seed == 3 and r.run_id is None
        assert "limit=6" in r.dataset_version and "sha256:" in r.dataset_version
    bbq, crows, ss, ppl = (r.metrics for r in rows)
    assert bbq["n_ambig"] + bbq["n_disambig"] == 6 and 0.0 <= bbq["acc_ambig"] <= 1.0
    assert crows["n"] == 6 and 0.0 <= crows["stereotype_score"] <= 100.0
    assert ss["n"] == 6 and ss["icat"] == pytest.approx(ss["lms"] * min(ss["ss"], 100 - ss["ss"]) / 50)
    # A random tiny model is close to uniform over its 49k vocabulary: perplexity in the tens of thousands.
    assert ppl["perplexity"] > 1000 and ppl["n"] == 6
    for r in rows:  # per-item outcomes and intervals are stored with every result
        assert r.metrics["items"]["n"] == 6 and r.metrics["bootstrap"]["n_boot"] == 1000
    lo, hi = crows["ci"]["stereotype_score"]
    assert lo <= crows["stereotype_score"] <= hi
    out = capsys.readouterr().out
    assert "stored 4 evaluation(s)" in out and "95% bootstrap intervals" in out and "| all | 6 |" in out


def test_against_stores_a_paired_comparison_on_the_same_items(store, tiny_model_dir, capsys):
    evaluate_cli(store, str(tiny_model_dir), ["crows_pairs"], limit=6, progress=False)
    evaluate_cli(store, str(tiny_model_dir), ["crows_pairs", "perplexity"], limit=6, progress=False,
                 against=str(tiny_model_dir))
    first, again, ppl = _evaluations(store)
    paired = again.metrics["paired"]
    assert paired["against"] == {"evaluation": first.id, "model": str(tiny_model_dir)}
    diff, lo, hi, p = paired["changes"]["stereotype_score"]
    assert diff == 0 and lo == 0 and hi == 0 and p == 1.0  # the same model on the same items: no change
    assert "paired" not in ppl.metrics  # no earlier perplexity result to pair with
    out = capsys.readouterr().out
    assert "| stereotype_score |" in out and "perplexity: no stored result" in out
    # eval-show reprints a stored result and recomputes the same paired changes from the stored items.
    show_cli(store, [again.id], against=first.id)
    shown = capsys.readouterr().out
    assert f"evaluation {again.id}:" in shown and "| stereotype_score | " in shown and "| all | 6 |" in shown
    with pytest.raises(ConfigError, match="no stored evaluation"):
        show_cli(store, [999])
    # Other items (another seed) are never paired.
    evaluate_cli(store, str(tiny_model_dir), ["crows_pairs"], limit=6, seed=1, progress=False,
                 against=str(tiny_model_dir))
    assert "paired" not in _evaluations(store)[-1].metrics


def test_bbq_lm_eval_format_runs_and_is_named_in_the_version(store, tiny_model_dir):
    evaluate_cli(store, str(tiny_model_dir), ["bbq"], limit=4, progress=False, bbq_format="lm_eval", n_boot=0)
    (row,) = _evaluations(store)
    assert "format=lm_eval" in row.dataset_version and row.metrics["n_ambig"] + row.metrics["n_disambig"] == 4
    assert "ci" not in row.metrics and row.metrics["items"]["n"] == 4  # n_boot=0: items kept, no intervals
    with pytest.raises(ConfigError, match="bbq_format"):
        evaluate_cli(store, str(tiny_model_dir), ["bbq"], bbq_format="helm")


def test_run_reference_is_exported_and_results_go_to_that_run(store, tmp_path, tiny_model_dir):
    from engine.models.checkpoint import save_checkpoint
    from engine.models.loading import load_policy

    run_id = submit_run(store, GRPOConfig(model=str(tiny_model_dir)))
    with pytest.raises(ModelRefError, match="has no checkpoint yet"):
        evaluate_cli(store, f"run:{run_id}", ["perplexity"], limit=2, progress=False)
    policy = load_policy(str(tiny_model_dir), need_reference=False, device="cpu")
    with torch.no_grad():
        policy.model.model.embed_tokens.weight.mul_(0.0)  # a degenerate "trained" model: uniform predictions
    ckpt = save_checkpoint(tmp_path / "ckpt", policy, step=7, save_rng=False)
    record_checkpoint(store, run_id, 7, str(ckpt))
    evaluate_cli(store, str(run_id), ["perplexity"], limit=2, progress=False)
    (row,) = _evaluations(store)
    assert row.run_id == run_id and row.step == 7 and row.checkpoint == str(ckpt) and row.model == f"run:{run_id}"
    # Zero embeddings give the same logits everywhere; the checkpoint's weights (not the base) were evaluated.
    assert row.metrics["perplexity"] > 1000


def test_bad_inputs_fail_with_clear_messages(store):
    with pytest.raises(ConfigError, match="unknown benchmark"):
        evaluate_cli(store, "embedded:smollm2-135m-instruct", ["bbq", "mmlu"])
    with pytest.raises(ModelRefError, match="run:ID"):
        parse_run_ref("run:abc")
    with pytest.raises(ModelRefError, match="no config.json"):
        evaluate_cli(store, "/nonexistent/model/folder", ["bbq"])
    assert parse_run_ref("run:12") == 12 and parse_run_ref("12") == 12 and parse_run_ref("org/model") is None


def test_item_selection_is_balanced_held_out_and_seeded():
    items, _ = bbq_items(EvalSettings(limit=24, seed=0))
    cells = {(r.category, r.context_condition) for r in items}
    assert len(items) == 24 and len(cells) == 12  # 6 categories x 2 conditions, two each
    from engine.data.registry import load_named

    trained_on = {p.meta["split_key"] for split in ("train", "validation") for p in load_named("bbq_pairs", split=split)}
    assert trained_on and not trained_on & {r.split_key for r in items}  # never a template DPO trains on
    again, _ = bbq_items(EvalSettings(limit=24, seed=0))
    other, _ = bbq_items(EvalSettings(limit=24, seed=1))
    assert [r.example_id for r in again] == [r.example_id for r in items]
    assert [r.example_id for r in other] != [r.example_id for r in items]
    assert balanced_sample(list(range(10)), lambda x: str(x % 2), str, 4, 0).count(0) <= 1
    assert len(neutral_passages()) >= 30


def test_eval_job_runner_stores_under_the_job(store, tiny_model_dir):
    from engine.runs.evaluate import execute

    cfg = EvalConfig(model=str(tiny_model_dir), benchmarks=["crows_pairs", "perplexity"], limit=4)
    run_id = submit_run(store, cfg)
    execute(RunContext(store, run_id, cfg, resume=False))
    rows = _evaluations(store)
    assert [(r.run_id, r.model, r.benchmark, r.step) for r in rows] == [
        (run_id, str(tiny_model_dir), "crows_pairs", 1), (run_id, str(tiny_model_dir), "perplexity", 1)]
    with store.read() as s:
        metrics = {m.key: m.value for m in s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id))}
    assert metrics["eval/perplexity/perplexity"] == pytest.approx(rows[1].metrics["perplexity"])
    assert math.isfinite(metrics["eval/crows_pairs/stereotype_score"])
    # A resumed job starts over without duplicating its results.
    execute(RunContext(store, run_id, cfg, resume=True))
    assert len(_evaluations(store)) == 2


def test_eval_job_defaults_to_the_full_bundled_sets():
    """The queued eval job, like `studio eval`, scores every item unless a limit is set."""
    cfg = EvalConfig()
    assert cfg.limit == 0
    everything, _ = bbq_items(EvalSettings(limit=0))
    assert len(bbq_items(EvalSettings(limit=cfg.limit, seed=cfg.seed))[0]) == len(everything) == 180
    assert len(bbq_items(EvalSettings(limit=24))[0]) == 24


def test_eval_show_prints_a_runs_own_held_out_evaluation(store, capsys):
    """A training run stores its held-out reward under "reward/..." keys (heldout_result_block); eval-show must
    print those numbers, not an empty table."""
    from db.writes import record_evaluation
    from engine.evaluation.harness import heldout_result_block

    values = [0.2, 0.4, 0.9, 1.1, 0.6, 0.8]
    groups = ["age", "age", "gender", "gender", "race", "race"]
    prompts = [f"prompt {i}" for i in range(6)]
    metrics = {"reward/mean": sum(values) / 6, "reward/age": 0.3, "reward/gender": 1.0, "reward/race": 0.7,
               "kl": 0.0012, "completion/len_mean": 40.0,
               **heldout_result_block(values, groups, prompts, ["an answer"] * 6, n_boot=200)}
    ev = record_evaluation(store, run_id=None, model="m", benchmark="heldout_reward", dataset_version="v",
                           metrics=metrics, source="run")
    show_cli(store, [ev])
    out = capsys.readouterr().out
    assert "heldout_reward: 6 items" in out
    all_row = next(line for line in out.splitlines() if line.startswith("| all |"))
    assert "0.667 [" in all_row and "0.300" in all_row and "0.001" in all_row  # mean with interval, worst, kl
    assert "| age | 2 | 0.300 [" in out and "| gender | 2 | 1.000 [" in out


def test_eval_show_pairs_two_held_out_evaluations_of_a_run(store, capsys):
    """`eval-show AFTER --against BEFORE` on a run's own step-0 and last-step held-out evaluations prints the
    paired change of the mean, the worst group and every group (it printed an empty table: the changes carry the
    item table's `reward` keys, the table looked for heldout_reward's)."""
    from db.writes import record_evaluation
    from engine.evaluation.harness import heldout_result_block

    groups = ["age", "age", "gender", "gender", "race", "race"]
    prompts = [f"prompt {i}" for i in range(6)]
    ids = []
    for step, values in ((0, [0.2, 0.4, 0.9, 1.1, 0.6, 0.8]), (24, [0.5, 0.7, 0.9, 1.1, 0.6, 0.8])):
        metrics = {"reward/mean": sum(values) / 6, **heldout_result_block(values, groups, prompts, ["a"] * 6,
                                                                          n_boot=200)}
        ids.append(record_evaluation(store, run_id=None, model="m", benchmark="heldout_reward", dataset_version="v",
                                     metrics=metrics, step=step, source="run"))
    show_cli(store, [ids[1]], against=ids[0])
    out = capsys.readouterr().out
    assert f"heldout_reward: m (evaluation {ids[1]}) vs m (evaluation {ids[0]}) on the same items" in out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "| 0.667 | 0.767 | +0.100 [" in rows["mean"]
    assert "| 0.300 | 0.600 | +0.300 [" in rows["age/mean"] and "+0.000" in rows["gender/mean"]
    assert "| 0.300 | 0.600 | +0.300" in rows["worst_group"]
