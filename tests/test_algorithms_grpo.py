"""GRPO maths: advantages, k3 KL, clipped surrogate (token / GSPO sequence ratios), aggregations, log-probs.

Every vectorised function is compared with a plain-Python per-element loop on random inputs."""
from __future__ import annotations

import math

import pytest
import torch

from engine.algorithms.grpo import (
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    kl_k3,
    token_logprobs,
)

NAN = float("nan")


# ---------------------------------------------------------------- loop references
def loop_advantages(rewards: list[float], g: int, scale: str, eps: float) -> tuple[list[float], list[bool]]:
    def ustd(xs):
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    all_valid = [r for r in rewards if not math.isnan(r)]
    batch_std = ustd(all_valid) if len(all_valid) >= 2 else 0.0
    adv, zero = [], []
    for start in range(0, len(rewards), g):
        grp = rewards[start : start + g]
        valid = [r for r in grp if not math.isnan(r)]
        zv = len(valid) < 2 or (max(valid) - min(valid)) <= 1e-6 * max(1.0, max(abs(r) for r in valid))
        zero.append(zv)
        for r in grp:
            if zv or math.isnan(r):
                adv.append(0.0)
                continue
            mean = sum(valid) / len(valid)
            d = {"group": ustd(valid) + eps, "batch": batch_std + eps, "none": 1.0}[scale]
            adv.append((r - mean) / d)
    return adv, zero


def loop_grpo_loss(logp, old, adv, mask, ref, beta, eps_low, eps_high, level, agg, max_len):
    b_n, t_n = len(logp), len(logp[0])
    seq_sums, lengths = [], []
    for b in range(b_n):
        toks = [t for t in range(t_n) if mask[b][t]]
        lengths.append(len(toks))
        if level == "sequence":
            log_s = sum(logp[b][t] - old[b][t] for t in toks) / max(len(toks), 1)
        s = 0.0
        for t in toks:
            w = math.exp(log_s if level == "sequence" else logp[b][t] - old[b][t])
            wc = min(max(w, 1 - eps_low), 1 + eps_high)
            loss_t = -min(w * adv[b], wc * adv[b])
            if beta:
                d = ref[b][t] - logp[b][t]
                loss_t += beta * (math.exp(d) - d - 1)
            s += loss_t
        seq_sums.append(s)
    if agg == "seq_mean":
        return sum(s / max(n, 1) for s, n in zip(seq_sums, lengths)) / b_n
    if agg == "constant":
        return sum(seq_sums) / (b_n * (max_len or t_n))
    return sum(seq_sums) / max(sum(lengths), 1)


def trl_sequence_loss(logp, old, adv, mask, eps_low, eps_high):
    """TRL's GSPO form (coef of shape (B, 1) with the gradient through the masked mean): gradient reference."""
    m = mask.to(logp.dtype)
    log_s = ((logp - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    c1 = torch.exp(log_s)
    c2 = torch.clamp(c1, 1 - eps_low, 1 + eps_high)
    per_tok = -torch.min(c1 * adv.unsqueeze(1), c2 * adv.unsqueeze(1))
    return ((per_tok * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()


class Explodes(torch.Tensor):
    """A tensor that fails the test if any torch operation touches it."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"ref_logp was used ({func}) although beta == 0")


# ---------------------------------------------------------------- advantages
def test_advantages_hand_computed():
    adv, zero = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0]), 2, "group", eps=0.0)
    s = math.sqrt(0.5)  # unbiased std of {0, 1}
    torch.testing.assert_close(adv, torch.tensor([0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s, 0.0, 0.0]))
    assert zero.tolist() == [False, False, True]
    adv, _ = group_advantages(torch.tensor([3.0, 1.0, 5.0, 5.0]), 2, "none")
    assert adv.tolist() == [1.0, -1.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_advantages_match_loop(seed, scale, g):
    gen = torch.Generator().manual_seed(seed)
    m = int(torch.randint(1, 6, (1,), generator=gen))
    r = torch.rand(m * g, generator=gen, dtype=torch.float64) * 4 - 2
    r[torch.rand(m * g, generator=gen) < 0.15] = NAN
    if m > 1:
        r[:g] = 0.5  # one zero-variance group
    out = group_advantages(r, g, scale)
    ref_adv, ref_zero = loop_advantages(r.tolist(), g, scale, 1e-4)
    torch.testing.assert_close(out.advantages, torch.tensor(ref_adv, dtype=torch.float64))
    assert out.zero_variance.tolist() == ref_zero
    assert out.num_missing == int(torch.isnan(r).sum())


def test_zero_variance_float_noise_gives_exact_zero():
    r = torch.tensor([0.731, 0.731 + 1e-9, 0.731 - 1e-9, 0.731], dtype=torch.float64)
    adv, zero = group_advantages(r, 4, "group", eps=1e-12)  # a tiny eps would blow the noise up to +-1
    assert adv.tolist() == [0.0] * 4 and zero.tolist() == [True]


def test_nan_rewards_are_missing():
    out = group_advantages(torch.tensor([NAN, 1.0, 3.0, NAN, NAN, 7.0]), 3, "none")
    assert out.advantages.tolist() == [0.0, -1.0, 1.0, 0.0, 0.0, 0.0]
    assert out.zero_variance.tolist() == [False, True]  # one valid reward: no variance to learn from
    assert out.num_missing == 3
    assert not torch.isnan(out.advantages).any()


def test_advantages_validation():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="inf"):
        group_advantages(torch.tensor([1.0, float("inf")]), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, "std")  # type: ignore[arg-type]


# ---------------------------------------------------------------- KL, log-probs, entropy
def test_kl_k3_hand_value_and_nonnegative():
    got = kl_k3(torch.tensor([[0.0]]), torch.tensor([[math.log(0.5)]]))
    assert float(got) == pytest.approx(0.5 - math.log(0.5) - 1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 7, generator=gen) * 5, torch.randn(50, 7, generator=gen) * 5
    assert torch.all(kl_k3(a, b) >= 0)
    assert torch.all(kl_k3(a, a) == 0)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_token_logprobs_and_entropy_match_full_softmax(chunk):
    gen = torch.Generator().manual_seed(chunk)
    logits = torch.randn(3, 5, 13, generator=gen, dtype=torch.float64) * 3
    tokens = torch.randint(0, 13, (3, 5), generator=gen)
    full = torch.log_softmax(logits.float(), -1)
    expected = full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens, chunk_rows=chunk), expected)
    ent = [[-sum(math.exp(x) * x for x in full[b, t].tolist()) for t in range(5)] for b in range(3)]
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows=chunk), torch.tensor(ent), rtol=1e-5, atol=1e-5)


def test_entropy_edge_cases():
    uniform = torch.zeros(1, 1, 8)
    assert float(entropy_from_logits(uniform)) == pytest.approx(math.log(8), abs=1e-6)
    masked = torch.tensor([[[0.0, -float("inf"), 0.0]]])
    assert float(entropy_from_logits(masked)) == pytest.approx(math.log(2), abs=1e-6)


# ---------------------------------------------------------------- GRPO loss
def make_batch(seed, b, t, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=gen, dtype=dtype) * 3
    old = logp + (torch.rand(b, t, generator=gen, dtype=dtype) - 0.5) * 0.8  # ratios ~ e^{+-0.4}: some clipped
    ref = logp + (torch.rand(b, t, generator=gen, dtype=dtype) - 0.5)
    adv = torch.randn(b, generator=gen, dtype=dtype)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    return logp, old, ref, adv, mask


def test_grpo_loss_hand_computed():
    logp = torch.log(torch.tensor([[0.6, 0.5]]))
    old = torch.log(torch.tensor([[0.4, 0.5]]))  # ratios 1.5 and 1.0
    adv = torch.tensor([2.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    kw = dict(ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.28, ratio_level="token")
    loss, stats = grpo_loss(logp, old, adv, mask, aggregation="seq_mean", **kw)
    # token 1 clipped at 1.28 (A > 0): -(1.28 * 2); token 2: -(1 * 2); mean = -2.28
    assert float(loss) == pytest.approx(-2.28)
    assert float(stats["clip_high"]) == 0.5 and float(stats["clip_low"]) == 0.0
    assert float(stats["ratio_mean"]) == pytest.approx(1.25)
    loss, _ = grpo_loss(logp, old, adv, mask, aggregation="constant", max_len=4, **kw)
    assert float(loss) == pytest.approx(-4.56 / 4)
    # a negative advantage is not clipped above: -min(1.5 * -2, 1.28 * -2) = 3
    loss, stats = grpo_loss(logp, old, -adv, mask, aggregation="token_mean", **kw)
    assert float(loss) == pytest.approx((3.0 + 2.0) / 2)
    assert float(stats["clip_high"]) == 0.0 and float(stats["clip"]) == 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("agg", ["seq_mean", "constant", "token_mean"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_loop(seed, level, agg, beta):
    b, t = [(1, 1), (3, 5), (6, 9), (4, 2)][seed]
    logp, old, ref, adv, mask = make_batch(seed, b, t)
    max_len = t + 3 if agg == "constant" else None
    loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=beta, eps_low=0.2, eps_high=0.28,
                            ratio_level=level, aggregation=agg, max_len=max_len)
    expected = loop_grpo_loss(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), ref.tolist(), beta,
                              0.2, 0.28, level, agg, max_len)
    assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(stats["per_sequence_loss"].mean(), loss)


@pytest.mark.parametrize("seed", range(3))
def test_gspo_gradient_equals_trl_sequence_form(seed):
    logp, old, _, adv, mask = make_batch(seed + 10, 4, 6)
    a = logp.clone().requires_grad_()
    loss, _ = grpo_loss(a, old, adv, mask, ref_logp=None, beta=0.0, eps_low=3e-4, eps_high=4e-4,
                        ratio_level="sequence", aggregation="seq_mean")
    loss.backward()
    bb = logp.clone().requires_grad_()
    ref_loss = trl_sequence_loss(bb, old, adv, mask, 3e-4, 4e-4)
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach())
    torch.testing.assert_close(a.grad, bb.grad)


def test_gradients_only_reach_policy_logprobs():
    logp, old, ref, adv, mask = make_batch(3, 3, 4)
    logp, old, ref, adv = (x.clone().requires_grad_() for x in (logp, old, ref, adv))
    for level in ("token", "sequence"):
        loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, eps_low=0.2, eps_high=0.2,
                                ratio_level=level, aggregation="seq_mean")
        loss.backward()
        assert logp.grad is not None and logp.grad.abs().sum() > 0
        assert old.grad is None and ref.grad is None and adv.grad is None
        assert all(not v.requires_grad for k, v in stats.items() if k != "per_sequence_loss")
        assert stats["per_sequence_loss"].requires_grad
        # padding gets no gradient
        assert torch.all(logp.grad[~mask] == 0)
        logp.grad = None


def test_beta_zero_never_touches_reference():
    logp, old, ref, adv, mask = make_batch(1, 2, 3)
    bomb = ref.clone().as_subclass(Explodes)
    with pytest.raises(AssertionError, match="ref_logp was used"):  # the bomb does go off when used
        grpo_loss(logp, old, adv, mask, ref_logp=bomb, beta=0.1, eps_low=0.2, eps_high=0.2,
                  ratio_level="token", aggregation="token_mean")
    for r in (bomb, None):
        loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=r, beta=0.0, eps_low=0.2, eps_high=0.2,
                                ratio_level="token", aggregation="token_mean")
        assert torch.isfinite(loss) and float(stats["kl"]) == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, adv, mask, ref_logp=None, beta=0.1, eps_low=0.2, eps_high=0.2,
                  ratio_level="token", aggregation="token_mean")


def test_single_update_loss_is_minus_mean_advantage_with_nonzero_gradient():
    logp, _, _, adv, mask = make_batch(5, 5, 4)
    p = logp.clone().requires_grad_()
    loss, stats = grpo_loss(p, p.detach(), adv, mask, ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2,
                            ratio_level="token", aggregation="seq_mean")
    assert float(loss.detach()) == pytest.approx(-float(adv.mean()))
    assert float(stats["ratio_mean"]) == pytest.approx(1.0) and float(stats["clip"]) == 0.0
    loss.backward()
    assert p.grad.abs().sum() > 0


def test_padding_with_inf_logprobs_is_harmless():
    logp, old, ref, adv, mask = make_batch(2, 3, 5)
    logp = torch.where(mask, logp, torch.full_like(logp, -float("inf")))
    old = torch.where(mask, old, torch.full_like(old, 0.0))
    for level in ("token", "sequence"):
        p = logp.clone().requires_grad_()
        loss, stats = grpo_loss(p, old, adv, mask, ref_logp=ref, beta=0.04, eps_low=0.2, eps_high=0.28,
                                ratio_level=level, aggregation="token_mean")
        assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in stats.values())
        loss.backward()
        assert torch.isfinite(p.grad).all() and torch.all(p.grad[~mask] == 0)


def test_grpo_loss_validation():
    logp, old, ref, adv, mask = make_batch(0, 2, 3)
    kw = dict(ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, ratio_level="token")
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logp, old, adv, mask, aggregation="sum", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, adv[:1], mask, aggregation="seq_mean", **kw)
    with pytest.raises(ValueError, match="max_len"):
        grpo_loss(logp, old, adv, mask, aggregation="constant", max_len=0, **kw)


def test_clip_fractions_are_region_aware():
    # ratios 0.5, 1.5, 1.0 on one sequence each; only clipping that removes the gradient counts.
    logp = torch.log(torch.tensor([[0.5], [1.5], [1.0]]))
    old = torch.zeros(3, 1)
    mask = torch.ones(3, 1, dtype=torch.bool)
    kw = dict(ref_logp=None, beta=0.0, eps_low=0.2, eps_high=0.2, ratio_level="token", aggregation="token_mean")
    _, pos = grpo_loss(logp, old, torch.tensor([1.0, 1.0, 1.0]), mask, **kw)
    assert float(pos["clip_low"]) == 0.0 and float(pos["clip_high"]) == pytest.approx(1 / 3)
    _, neg = grpo_loss(logp, old, torch.tensor([-1.0, -1.0, -1.0]), mask, **kw)
    assert float(neg["clip_low"]) == pytest.approx(1 / 3) and float(neg["clip_high"]) == 0.0
    assert float(neg["clip"]) == pytest.approx(1 / 3)
