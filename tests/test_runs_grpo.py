"""BiasGRPO and group-robust GRPO runs: the pure pieces on tensors, then whole runs on a tiny model (in process and
through the real worker), NaN rewards, the vLLM sampler, and a short run of the real default model (slow)."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import run_cli
from tests.runs_fixtures import (
    evaluations,
    group_rows,
    grpo_config,
    metrics_by_step,
    run_in_process,
    sample_count,
)

STEP_KEYS = {"reward/mean", "reward/std", "reward/worst_group", "kl", "entropy", "clip/low", "clip/high",
             "completion/len_mean", "completion/len_max", "completion/truncated_frac", "zero_var_frac",
             "reward/nan_count", "lr", "grad_norm", "loss", "time/sample", "time/reward", "time/logprobs", "time/update", "time/sync",
             "time/step", "tokens_per_s", "memory/peak_mb"}


# ------------------------------------------------------------------------------------------ pure pieces

def test_batch_schedule_is_a_function_of_seed_and_step_and_balanced():
    from engine.runs.schedule import BatchSchedule

    groups = ["a"] * 10 + ["b"] * 3 + ["c"] * 5
    s1 = BatchSchedule(groups, 6, seed=3, mode="balanced")
    s2 = BatchSchedule(groups, 6, seed=3, mode="balanced")
    later_first = [s2.indices(t) for t in (5, 1, 3, 2, 4)]  # order of calls must not matter
    assert [s1.indices(t) for t in (5, 1, 3, 2, 4)] == later_first
    for t in range(1, 8):
        picked = [groups[i] for i in s1.indices(t)]
        assert sorted(picked) == ["a", "a", "b", "b", "c", "c"]  # every group equally often
    # a group's rows are all visited before any repeats (per-group permutations)
    b_rows = [i for t in range(1, 3) for i in s1.indices(t) if groups[i] == "b"]
    assert len(set(b_rows[:3])) == 3
    assert BatchSchedule(groups, 6, seed=4).indices(1) != s1.indices(1) or \
        BatchSchedule(groups, 6, seed=4).indices(2) != s1.indices(2)

    r = BatchSchedule(groups, 4, seed=0, mode="random")
    epoch = [i for t in range(1, 5) for i in r.indices(t)][:18]
    assert sorted(epoch[:16]) == sorted(set(epoch[:16]))  # a permutation: no repeats within an epoch


def test_update_policy_micro_batched_equals_full_batch_grpo_loss(tiny_model_dir):
    """The engine's one update path (update_policy on a TrainBatch, micro-batched, coefficients 1/B) gives the loss
    and gradient of grpo_loss on the full batch, for every aggregation and both ratio levels."""
    import torch

    from engine.algorithms.grpo import grpo_loss
    from engine.models.loading import load_policy
    from engine.runs.grpo import TrainBatch, sequence_coefficients, update_policy
    from engine.models.forward import forward_logprobs, padded_rows

    torch.manual_seed(0)
    pol = load_policy(str(tiny_model_dir), device="cpu", need_reference=False)
    pol.model.train()
    params = pol.trainable_parameters()
    b = 6
    prompts = [[11, 12, 13, 14]] * 3 + [[15, 16, 17]] * 3
    completions = [torch.randint(20, 200, (n,)).tolist() for n in (5, 2, 4, 3, 5, 1)]
    rows = padded_rows(prompts, completions, pol.tokenizer.pad_token_id)
    mask = rows.target_mask
    with torch.no_grad():
        base, _ = forward_logprobs(pol.model, rows)
    old = (base + 0.3 * torch.randn(base.shape)) * mask  # away from the policy: clipping and KL are active
    ref = (base + 0.3 * torch.randn(base.shape)) * mask
    adv = torch.randn(b)
    batch = TrainBatch(rows, adv, sequence_coefficients(torch.zeros(b, dtype=torch.long), 1, None),
                       old_logp=old, ref_logp=ref)

    class Recorder(torch.optim.SGD):
        """SGD at learning rate 0 that keeps the gradients it was asked to apply."""

        def step(self, closure=None):
            self.grads = [p.grad.clone() for p in params]
            return super().step(closure)

    for agg, level in (("seq_mean", "token"), ("constant", "token"), ("token_mean", "token"),
                       ("token_mean", "sequence")):
        kw = dict(beta=0.1, eps_low=0.2, eps_high=0.28, ratio_level=level, aggregation=agg, max_len=5)
        pol.model.zero_grad(set_to_none=True)
        logp, _ = forward_logprobs(pol.model, rows)
        full, _ = grpo_loss(logp, old, adv, mask, ref_logp=ref, **kw)
        full.backward()
        full = float(full.detach())
        want = [p.grad.clone() for p in params]
        pol.model.zero_grad(set_to_none=True)
        opt = Recorder(params, lr=0.0)
        got = update_policy(pol.model, params, opt, batch, num_iterations=1, micro_batch_size=4, max_grad_norm=0.0,
                            loss_kw=kw)
        assert got.loss == pytest.approx(full, rel=1e-5, abs=1e-6), agg
        assert got.grad_norm == pytest.approx(float(torch.stack([w.norm() for w in want]).norm()), rel=1e-4), agg
        for g, w in zip(opt.grads, want):  # micro-batches run other kernels: float32 rounding, not a formula
            assert float((g - w).norm()) <= 1e-4 * float(w.norm()) + 1e-7, agg


def test_token_mean_normalizer_is_the_whole_batch_tokens_per_sequence():
    """grpo_loss's normalizer: per-sequence token sums over the whole batch's tokens per sequence, so micro-batch
    losses summed with coefficients 1/B equal the full-batch token mean; without it, the call's own batch."""
    import torch

    from engine.algorithms.grpo import grpo_loss

    torch.manual_seed(1)
    b, t = 5, 6
    mask = (torch.rand(b, t) > 0.3).float()
    mask[:, 0] = 1
    logp, old, ref, adv = torch.randn(b, t), torch.randn(b, t), torch.randn(b, t), torch.randn(b)
    kw = dict(ref_logp=ref, beta=0.1, eps_low=0.2, eps_high=0.28, ratio_level="token", aggregation="token_mean")
    full, st_full = grpo_loss(logp, old, adv, mask, **kw)
    norm = float(mask.sum()) / b
    parts = [grpo_loss(logp[a:e], old[a:e], adv[a:e], mask[a:e], normalizer=norm,
                       **{**kw, "ref_logp": ref[a:e]})[1]["per_sequence_loss"] for a, e in ((0, 2), (2, 5))]
    assert float(torch.cat(parts).sum() / b) == pytest.approx(float(full), rel=1e-6)
    assert torch.allclose(torch.cat(parts), st_full["per_sequence_loss"], atol=1e-6)
    with pytest.raises(ValueError, match="normalizer"):
        grpo_loss(logp, old, adv, mask, normalizer=0.0, **kw)


def test_sequence_coefficients_group_weighting():
    import torch

    from engine.runs.grpo import sequence_coefficients

    ids = torch.tensor([0, 0, 2, 2, 2, 2])  # group 1 absent
    uniform = sequence_coefficients(ids, 3, torch.full((3,), 1 / 3))
    # uniform weights renormalised over the two present groups: each group's total is 1/2
    assert float(uniform[:2].sum()) == pytest.approx(0.5) and float(uniform[2:].sum()) == pytest.approx(0.5)
    w = sequence_coefficients(ids, 3, torch.tensor([0.6, 0.3, 0.1]))
    assert float(w.sum()) == pytest.approx(1.0)
    assert float(w[:2].sum()) == pytest.approx(0.6 / 0.7)
    balanced = sequence_coefficients(torch.tensor([0, 1, 0, 1]), 2, torch.tensor([0.5, 0.5]))
    assert torch.allclose(balanced, torch.full((4,), 0.25))  # = plain GRPO's 1/B


def test_group_reward_stats_skip_nan():
    import torch

    from engine.runs.grpo import group_reward_stats

    r = torch.tensor([1.0, float("nan"), 3.0, 0.5, float("nan"), float("nan")])
    mean, std, n = group_reward_stats(r, torch.tensor([0, 0, 0, 1, 2, 2]), 3)
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(1.0) and n.tolist() == [2, 1, 0]
    assert math.isnan(float(mean[2]))


# ------------------------------------------------------------------------------------------ runs on the tiny model

def test_grpo_run_in_process_writes_every_metric(store, tiny_model_dir):
    rid = run_in_process(store, grpo_config(str(tiny_model_dir), num_iterations=2, beta=0.04))
    metrics = metrics_by_step(store, rid)
    assert sorted(metrics) == [0, 1, 2]
    # step 0: the held-out evaluation before training, and nothing else
    assert set(metrics.pop(0)) == {"val/avg_reward", "val/worst_group_reward"}
    for step, m in metrics.items():
        assert STEP_KEYS <= set(m), STEP_KEYS - set(m)
        group_means = [v for k, v in m.items() if k.startswith("reward/group/") and v is not None]
        assert m["reward/worst_group"] == pytest.approx(min(group_means))
        assert m["lr"] == pytest.approx(1e-4)
        assert m["grad_norm"] is not None and m["grad_norm"] > 0
        assert 0 < m["completion/len_mean"] <= 6 and m["completion/len_max"] <= 6
        assert m["kl"] >= 0 and 0 <= m["clip/low"] <= 1
        assert any(k.startswith("reward/group/") for k in m)
        assert m["reward/length/mean"] == pytest.approx(m["reward/mean"], abs=1e-6)  # one term, weight 1
    assert sample_count(store, rid) == {1: 3, 2: 3}
    groups = group_rows(store, rid)
    assert all(row["weight"] is None for rows in groups.values() for row in rows.values())  # plain GRPO
    evals = evaluations(store, rid)
    assert [(b, s) for b, s, _ in evals] == [("heldout_reward", 0), ("heldout_reward", 2)]
    assert evals[0][2]["kl"] == pytest.approx(0.0, abs=1e-6)  # before training the policy IS the reference
    assert evals[1][2]["kl"] > 0
    assert {"reward/age", "reward/disability"} <= set(evals[0][2])  # per group (2 prompts: the first 2 groups)
    # stored with the per-prompt outcomes and the answers, so step 0 and the last step pair item by item
    assert all(ev["items"]["n"] == 2 and len(ev["answers"]) == 2 for _, _, ev in evals)
    assert evals[0][2]["items"]["key_digest"] == evals[1][2]["items"]["key_digest"]
    for (_, step, ev) in evals:  # the held-out metrics of each evaluation are also that step's metrics
        m = metrics_by_step(store, rid)[step]
        assert m["val/avg_reward"] == pytest.approx(ev["reward/mean"])
        assert m["val/worst_group_reward"] == pytest.approx(min(ev["reward/age"], ev["reward/disability"]))


def test_grpo_run_without_rewards_uses_the_default_reward_and_logs_every_term(store, tiny_model_dir):
    """The default GRPO reward (bias in context + relevance + refusal) on a real run: each term logged, the total
    their weighted sum."""
    from engine.config import GRPOConfig

    cfg = grpo_config(str(tiny_model_dir), eval_prompts=0, max_steps=1)
    del cfg["rewards"]
    rid = run_in_process(store, cfg)
    m = metrics_by_step(store, rid)[1]
    weights = {s.name: s.weight for s in GRPOConfig().rewards}
    assert set(weights) == {"bias_rm", "relevance", "refusal"}
    for name in weights:
        assert m[f"reward/{name}/mean"] is not None and 0.0 <= m[f"reward/{name}/mean"] <= 1.0
    expected = sum(w * m[f"reward/{name}/mean"] for name, w in weights.items())
    assert m["reward/mean"] == pytest.approx(expected, abs=1e-5)


def test_ignore_eos_config_reaches_the_sampler_and_fixes_the_length(store, tiny_model_dir, monkeypatch):
    from engine.sampling.hf import HFSampler

    seen = []
    real = HFSampler.generate

    def spy(self, prompts, **kw):
        seen.append(kw.get("ignore_eos", False))
        return real(self, prompts, **kw)

    monkeypatch.setattr(HFSampler, "generate", spy)
    rid = run_in_process(store, grpo_config(str(tiny_model_dir), ignore_eos=True, eval_prompts=0))
    assert seen == [True, True]  # one generate per training step, each with the option
    for m in metrics_by_step(store, rid).values():
        assert m["completion/len_mean"] == 6 and m["completion/len_max"] == 6


def test_nan_and_empty_rewards_do_not_crash_and_are_counted(store, tiny_model_dir, monkeypatch):
    """A reward that cannot score some completions (NaN) or none of them: zero advantage, counted, no crash."""
    import engine.rewards.base as rewards_base
    from engine.rewards.base import CombinedReward

    class HalfNaN:
        name = "half_nan"

        def __init__(self):
            self.calls = 0

        def __call__(self, prompts, completions):
            self.calls += 1
            if self.calls == 2:  # the second call (step 2): nothing scorable
                return [float("nan")] * len(completions)
            return [float("nan") if i % 2 else float(len(c)) for i, c in enumerate(completions)]

        def close(self):
            pass

    monkeypatch.setattr(rewards_base, "build_reward", lambda specs, device="cpu": CombinedReward(
        [("half_nan", 1.0, HalfNaN())]))
    rid = run_in_process(store, grpo_config(str(tiny_model_dir), eval_prompts=0, max_steps=2))
    m = metrics_by_step(store, rid)
    assert m[1]["reward/nan_count"] == 2.0  # 4 completions, every other one NaN
    assert m[2]["reward/nan_count"] == 4.0
    assert m[2]["reward/mean"] is None  # NaN is stored as NULL: a gap, not a made-up number
    assert m[2]["zero_var_frac"] == 1.0 and m[2]["advantage/abs_mean"] == 0.0
    assert m[2]["loss"] is not None and math.isfinite(m[2]["loss"])
    assert m[2]["reward/worst_group"] is None and m[1]["reward/worst_group"] is not None
    # a group none of whose completions could be scored stays in the group table, with its completion count and
    # its loss (the mean over its sequences, not over its finite rewards)
    rows = group_rows(store, rid)
    assert len(rows[2]) == len(rows[1]) == 2
    for row in rows[2].values():
        assert row["reward_mean"] is None and row["count"] == 2 and row["loss"] is not None


def test_grpo_and_gr_grpo_through_the_worker(store, db_url, tiny_model_dir, tmp_path):
    """submit -> `studio engine --once` -> metrics, group weights and samples in the store, step by step."""
    from db import queue
    from db.models import RunStatus

    ids = []
    for algo, extra in (("grpo", {}), ("gr_grpo", {"eta": 0.5, "chi": 1.0})):
        path = tmp_path / f"{algo}.json"
        path.write_text(json.dumps(grpo_config(str(tiny_model_dir), algorithm=algo, eval_prompts=0, **extra)))
        out = run_cli("submit", str(path), "--db", db_url)
        assert out.returncode == 0, out.stderr
        ids.append(int(out.stdout.split()[2]))
    out = run_cli("engine", "--db", db_url, "--once", "--poll", "0.2", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for rid in ids:
        run = queue.get_run(store, rid)
        assert run.status == RunStatus.completed, (run.error, out.stdout)
        assert sorted(metrics_by_step(store, rid)) == [1, 2]
        assert queue.latest_checkpoint(store, rid).step == 2
    weights = group_rows(store, ids[1])
    for step in (1, 2):
        w = [row["weight"] for row in weights[step].values()]
        assert len(w) == 6 and sum(w) == pytest.approx(1.0, abs=1e-5)  # all groups, on the simplex
    assert len({round(x, 6) for x in (row["weight"] for row in weights[2].values())}) > 1  # the adversary moved
    m = metrics_by_step(store, ids[1])
    assert sum(v for k, v in m[2].items() if k.startswith("weight/")) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.vllm
def test_grpo_run_with_the_vllm_sampler(store, tiny_model_dir):
    pytest.importorskip("vllm")
    rid = run_in_process(store, grpo_config(str(tiny_model_dir), sampler="vllm", eval_prompts=2))
    m = metrics_by_step(store, rid)
    assert sorted(m) == [0, 1, 2] and all(m[s]["time/sync"] > 0 for s in (1, 2))  # 0: held-out before training
    assert len(evaluations(store, rid)) == 2


@pytest.mark.slow
def test_short_bias_grpo_run_on_the_default_model(store):
    """A few BiasGRPO steps of SmolLM2-135M-Instruct with the bias reward model, on the CPU."""
    from engine.config import DEFAULT_MODEL

    cfg = grpo_config(DEFAULT_MODEL, rewards=[{"name": "bias_rm"}], max_steps=2, prompts_per_step=2,
                      group_size=4, max_new_tokens=24, learning_rate=2e-6, eval_prompts=6, micro_batch_size=8)
    rid = run_in_process(store, cfg)
    m = metrics_by_step(store, rid)
    assert sorted(m) == [0, 1, 2]  # 0: the held-out evaluation before training
    assert 0.0 <= m[2]["reward/mean"] <= 1.0 and m[2]["reward/worst_group"] <= m[2]["reward/mean"]
    assert m[0]["val/worst_group_reward"] <= m[0]["val/avg_reward"] and m[2]["reward/nan_count"] == 0
    assert [s for _, s, _ in evaluations(store, rid)] == [0, 2]
