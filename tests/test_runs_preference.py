"""Preference runs (DPO, IPO, IS-*, GR-*): the reductions on tensors, the reference cache, every variant through the
real worker on a tiny model, and a short GR-IPO run of the default model (slow)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli
from tests.runs_fixtures import (
    evaluations,
    group_rows,
    metrics_by_step,
    preference_config,
    run_in_process,
)

VARIANTS = ("dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo")


def test_pair_coefficients_reproduce_each_reduction():
    import torch

    from engine.algorithms.group_robust import group_losses, importance_weights, mixed_weights, robust_loss
    from engine.runs.preference import pair_coefficients

    torch.manual_seed(0)
    loss = torch.rand(7)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    counts = torch.tensor([100.0, 10.0, 50.0])
    plain = pair_coefficients("plain", ids, 3, dataset_counts=counts)
    assert float((plain * loss).sum()) == pytest.approx(float(loss.mean()))

    isw = pair_coefficients("is", ids, 3, dataset_counts=counts)
    w = importance_weights(counts)[ids]
    assert float((isw * loss).sum()) == pytest.approx(float((w * loss).sum() / w.sum()))
    assert float(isw.sum()) == pytest.approx(1.0)
    # balanced sampling already draws every group equally often: no reweighting on top
    bal = pair_coefficients("is", ids, 3, dataset_counts=counts, sampling="balanced")
    assert bal.tolist() == pytest.approx(plain.tolist())
    with pytest.raises(ValueError, match="group sampling"):
        pair_coefficients("is", ids, 3, dataset_counts=counts, sampling="stratified")

    alpha = torch.tensor([0.2, 0.5, 0.3])
    mixed = mixed_weights(alpha, 0.7)
    gr = pair_coefficients("gr", ids, 3, dataset_counts=counts, mixed=mixed)
    gl, _ = group_losses(loss, ids, 3)
    assert float((gr * loss).sum()) == pytest.approx(float(robust_loss(gl, mixed)))


@pytest.mark.parametrize("sampling", ["random", "balanced"])
def test_is_coefficients_give_every_group_equal_mass(sampling: str):
    """IS is a group-balanced objective: on the batch each sampling mode draws in expectation (the whole data in
    proportion for random, equal counts for balanced), every group's pairs carry the same total weight."""
    import torch

    from engine.runs.preference import group_shares, pair_coefficients

    counts = torch.tensor([60.0, 240.0, 30.0])
    if sampling == "random":
        ids = torch.repeat_interleave(torch.arange(3), counts.long())
    else:
        ids = torch.arange(3).repeat(8)
    c = pair_coefficients("is", ids, 3, dataset_counts=counts, sampling=sampling)
    assert group_shares(c, ids, 3).tolist() == pytest.approx([1 / 3] * 3)
    # 1/N_g on a balanced batch would have given the smallest group the largest share instead
    wrong = pair_coefficients("is", ids, 3, dataset_counts=counts, sampling="random")
    if sampling == "balanced":
        assert group_shares(wrong, ids, 3).argmax() == counts.argmin()


def test_tokenize_pairs_respects_max_length(tiny_model_dir):
    from engine.data.types import PreferencePair
    from engine.models.loading import load_tokenizer
    from engine.runs.preference import tokenize_pairs

    tok = load_tokenizer(str(tiny_model_dir))
    pairs = [PreferencePair(prompt="word " * 200, chosen="yes", rejected="no no no", group="g", source="t")]
    out = tokenize_pairs(tok, pairs, max_length=40)
    assert len(out.prompt[0]) + max(len(out.chosen[0]), len(out.rejected[0])) <= 40
    assert out.chosen[0][-1] == tok.eos_token_id and out.rejected[0][-1] == tok.eos_token_id


def test_reference_cache_round_trip_and_fingerprint(tmp_path):
    import torch

    from engine.runs.preference import ReferenceCache

    c = ReferenceCache(4, "abc")
    assert c.missing([2, 0, 2]) == [2, 0]
    c.values[0] = torch.tensor([-1.0, -2.0])
    c.save(tmp_path / "ref.safetensors")
    back = ReferenceCache.load_or_new(tmp_path / "ref.safetensors", 4, "abc")
    assert back.missing([0, 1]) == [1] and back.values[0].tolist() == [-1.0, -2.0]
    other = ReferenceCache.load_or_new(tmp_path / "ref.safetensors", 4, "different model")
    assert other.missing([0]) == [0]  # a cache of another model/data is never trusted


def test_gr_ipo_in_process_logs_groups_and_reuses_the_reference_cache(store, tiny_model_dir):
    from engine.runs.preference import REF_CACHE

    cfg = preference_config(str(tiny_model_dir), "gr_ipo", max_steps=2, batch_size=3, micro_batch_size=2,
                            eta=0.05, eval_prompts=3, eval_every=0, checkpoint_every=1)
    rid = run_in_process(store, cfg)
    m = metrics_by_step(store, rid)
    assert sorted(m) == [0, 1, 2]
    # the held-out bias reward of each evaluation is also a metric of its step (step 0: before training)
    assert set(m[0]) == {"val/avg_reward", "val/worst_group_reward"}
    assert m[2]["val/worst_group_reward"] <= m[2]["val/avg_reward"] + 1e-9
    for step in (1, 2):
        for key in ("loss", "loss/worst_group", "accuracy", "accuracy/min_group", "margin/mean", "grad_norm", "lr",
                    "time/reference", "time/update", "time/step", "tokens_per_s", "memory/peak_mb"):
            assert m[step][key] is not None, key
        assert m[step]["loss/worst_group"] >= m[step]["loss/mean"] - 1e-6
        weights = [row["weight"] for row in group_rows(store, rid)[step].values()]
        assert len(weights) == 6 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    # step 1 starts from the reference, so its margins are exactly 0 and IPO's loss is (1/(2 beta))^2
    assert m[1]["margin/mean"] == pytest.approx(0.0, abs=1e-4)
    assert m[1]["loss/mean"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-3)
    benches = [(b, s) for b, s, _ in evaluations(store, rid)]
    assert benches == [("heldout_preference", 0), ("heldout_reward", 0), ("heldout_preference", 2),
                       ("heldout_reward", 2)]
    from db.queue import get_run
    from db.paths import run_folder

    assert (run_folder(rid, get_run(store, rid).folder_token) / REF_CACHE).is_file()


def test_every_preference_variant_through_the_worker(store, db_url, tiny_model_dir, tmp_path):
    from db import queue
    from db.models import RunStatus

    ids = {}
    for algo in VARIANTS:
        path = tmp_path / f"{algo}.json"
        extra = {"eta": 0.05} if algo.startswith("gr_") else {}
        path.write_text(json.dumps(preference_config(str(tiny_model_dir), algo, max_steps=1, **extra)))
        out = run_cli("submit", str(path), "--db", db_url)
        assert out.returncode == 0, out.stderr
        ids[algo] = int(out.stdout.split()[2])
    out = run_cli("engine", "--db", db_url, "--once", "--poll", "0.2", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    for algo, rid in ids.items():
        run = queue.get_run(store, rid)
        assert run.status == RunStatus.completed, (algo, run.error)
        m = metrics_by_step(store, rid)[1]
        assert m["loss"] is not None and m["accuracy"] is not None
        rows = group_rows(store, rid)[1]
        if algo.startswith(("gr_", "is_")):
            assert sum(r["weight"] for r in rows.values()) == pytest.approx(1.0, abs=1e-5)
        else:
            assert all(r["weight"] is None for r in rows.values())
    # IS logs each group's share of the step's objective: pairs weigh 1/N_g, so a group's share is n_g/N_g
    # normalised over the batch's groups (n_g: its pairs in this batch)
    from engine.data.registry import load_named
    from engine.runs.schedule import BatchSchedule

    train = load_named("bbq_pairs", "train", seed=0)
    counts: dict[str, int] = {}
    for p in train:
        counts[p.group] = counts.get(p.group, 0) + 1
    cfg = preference_config(str(tiny_model_dir), "is_dpo", max_steps=1)
    batch = BatchSchedule([p.group for p in train], cfg["batch_size"], cfg.get("seed", 0),
                          cfg.get("group_sampling", "random")).indices(1)
    drawn: dict[str, int] = {}
    for i in batch:
        drawn[train[i].group] = drawn.get(train[i].group, 0) + 1
    z = sum(n / counts[g] for g, n in drawn.items())
    rows = group_rows(store, ids["is_dpo"])[1]
    assert {g: r["weight"] for g, r in rows.items()} == pytest.approx(
        {g: drawn.get(g, 0) / counts[g] / z for g in counts}, abs=1e-6)


@pytest.mark.slow
def test_short_gr_ipo_run_on_the_default_model(store):
    from engine.config import DEFAULT_MODEL

    cfg = preference_config(DEFAULT_MODEL, "gr_ipo", max_steps=3, batch_size=4, max_length=128, micro_batch_size=8,
                            learning_rate=5e-6, eta=0.01, eval_prompts=6, eval_every=0)
    rid = run_in_process(store, cfg)
    m = metrics_by_step(store, rid)
    assert sorted(m) == [0, 1, 2, 3]  # 0: the held-out bias reward before training
    w = [r["weight"] for r in group_rows(store, rid)[3].values()]
    assert sum(w) == pytest.approx(1.0, abs=1e-5)
    assert [b for b, _, _ in evaluations(store, rid)].count("heldout_preference") == 2
