"""GRPO loss types from the registry (engine.algorithms.grpo.LOSS_TYPES): bnpo and cispo against TRL's own
GRPOTrainer._compute_loss on the TRL parity guard's batch (bench/grpo_vs_trl.py: the engine's update_policy on
one batch, clipping and KL active), their maths on hand-made tensors, and the config field (and so the New run
form) offering every registered type."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")


def test_bnpo_and_cispo_match_trls_loss_and_gradient_on_the_guard_batch(tiny_model_dir, tmp_path):
    from bench.grpo_vs_trl import grpo_guard

    pairs = {("dapo", "token"): ("token_mean", "token"), ("bnpo", "token"): ("bnpo", "token"),
             ("cispo", "token"): ("cispo", "token")}
    # 8 completions of random lengths in micro-batches of 4: the two micro-batches hold different token counts,
    # which is where bnpo's per-micro-batch mean and dapo's batch mean part
    results = {r.trl_loss: r for r in grpo_guard(str(tiny_model_dir), "cpu", seed=0, pairs=pairs,
                                                 workdir=tmp_path)}
    for name, r in results.items():
        assert r.ok, (name, r)
    # the three are different losses on this batch, so each pairing is tested, not the same number three times
    assert results["bnpo"].loss_ours != pytest.approx(results["dapo"].loss_ours, rel=1e-3)
    assert results["cispo"].loss_ours != pytest.approx(results["dapo"].loss_ours, rel=1e-3)
    assert results["cispo"].grad_ours != pytest.approx(results["dapo"].grad_ours, rel=1e-3)


def test_cispo_per_token_term_by_hand():
    """-sg(min(w, 1 + eps_high)) * A * log pi per token, no lower clip; the gradient flows through log pi only."""
    import torch

    from engine.algorithms.grpo import grpo_loss

    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0], [-0.5, -1.0]])  # ratios e^0.5, e^-1 | 1, e^-2
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, st = grpo_loss(logp, old, adv, mask, ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.28,
                         ratio_level="token", aggregation="cispo")
    w = [[min(1.28, 2.718281828459045 ** 0.5), 2.718281828459045 ** -1.0], [1.0, 0.0]]
    terms = [-w[0][0] * 1.0 * -1.0, -w[0][1] * 1.0 * -2.0, -w[1][0] * -1.0 * -0.5]
    assert float(loss) == pytest.approx(sum(terms) / 3, rel=1e-6)  # token mean over the 3 completion tokens
    assert float(st["clip_high"]) == pytest.approx(1 / 3)  # the e^0.5 token with A > 0
    assert float(st["clip_low"]) == 0.0  # e^-1 < 1 - eps_low with A > 0, and no lower clip anyway
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.28, -w[0][1]], [1.0, 0.0]]) / 3, atol=1e-6)


def test_bnpo_is_the_token_mean_of_each_call_and_ignores_the_batch_normalizer():
    import torch

    from engine.algorithms.grpo import grpo_loss

    torch.manual_seed(0)
    b, t = 4, 5
    mask = (torch.rand(b, t) > 0.4).float()
    mask[:, 0] = 1
    logp, old, adv = torch.randn(b, t), torch.randn(b, t), torch.randn(b)
    kw = dict(ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.28, ratio_level="token")
    bnpo, st = grpo_loss(logp, old, adv, mask, aggregation="bnpo", normalizer=123.0, **kw)
    dapo, _ = grpo_loss(logp, old, adv, mask, aggregation="token_mean", **kw)
    assert float(bnpo) == pytest.approx(float(dapo), rel=1e-6)  # one call: the same token mean
    torch.testing.assert_close(st["per_sequence_loss"].mean(), bnpo)
    halves = [grpo_loss(logp[a:e], old[a:e], adv[a:e], mask[a:e], aggregation="bnpo", normalizer=123.0, **kw)[0]
              for a, e in ((0, 2), (2, 4))]
    dapo_halves = [grpo_loss(logp[a:e], old[a:e], adv[a:e], mask[a:e], aggregation="token_mean",
                             normalizer=float(mask.sum()) / b, **kw)[1]["per_sequence_loss"].sum() / b
                   for a, e in ((0, 2), (2, 4))]
    assert float(sum(halves) / 2) != pytest.approx(float(dapo), rel=1e-3)  # micro-batch means, not the batch's
    assert float(sum(dapo_halves)) == pytest.approx(float(dapo), rel=1e-6)


def test_every_registered_loss_type_is_a_config_choice_with_its_help():
    from engine.algorithms.grpo import LOSS_TYPES
    from engine.config import GRPOConfig, field_help

    field = next(f for f in field_help(GRPOConfig) if f["name"] == "loss_aggregation")
    assert field["schema"]["enum"] == list(LOSS_TYPES)
    assert {"bnpo", "cispo"} <= set(LOSS_TYPES)
    for name, kind in LOSS_TYPES.items():
        assert f"{name}: {kind.help}" in field["help"]
        assert GRPOConfig(loss_aggregation=name).loss_aggregation == name
