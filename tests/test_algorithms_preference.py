"""DPO / IPO per-pair losses and sequence log-probs: hand-computed values, loop references, gradient routing."""
from __future__ import annotations

import math

import pytest
import torch

from engine.algorithms.preference import (
    dpo_loss,
    implicit_rewards,
    ipo_loss,
    preference_margin,
    reward_accuracy,
    sequence_logprobs,
)


def loop_dpo(pc, pr, rc, rr, beta, ls):
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
        out.append(-(1 - ls) * math.log(sig(beta * h)) - ls * math.log(sig(-beta * h)))
    return out


def loop_ipo(pc, pr, rc, rr, beta, cl=None, rl=None):
    out = []
    for i, (a, b, c, d) in enumerate(zip(pc, pr, rc, rr)):
        if cl is not None:
            a, c, b, d = a / cl[i], c / cl[i], b / rl[i], d / rl[i]
        out.append(((a - c) - (b - d) - 1 / (2 * beta)) ** 2)
    return out


def rand_pairs(seed, b):
    gen = torch.Generator().manual_seed(seed)
    return [(-torch.rand(b, generator=gen, dtype=torch.float64) * 30) for _ in range(4)]


def test_dpo_hand_computed():
    # h = (-1 - -2) - (-3 - -3) = 1; beta = 0.5: -log sigmoid(0.5)
    args = [torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-3.0])]
    assert float(preference_margin(*args)) == 1.0
    assert float(dpo_loss(*args, beta=0.5)) == pytest.approx(math.log(1 + math.exp(-0.5)))
    # at h = 0 DPO is log 2 whatever beta and smoothing
    zero = [torch.zeros(2)] * 4
    torch.testing.assert_close(dpo_loss(*zero, beta=0.3, label_smoothing=0.2), torch.full((2,), math.log(2)))


def test_ipo_hand_computed_and_zero_at_target_margin():
    beta = 0.25  # target margin 1/(2 beta) = 2
    pc = torch.tensor([0.0, -1.0])
    pr = torch.tensor([-2.0, -1.0])
    ref = torch.zeros(2)
    out = ipo_loss(pc, pr, ref, ref, beta)
    torch.testing.assert_close(out, torch.tensor([0.0, 4.0]))  # margins 2 and 0: (2-2)^2, (0-2)^2


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("b", [1, 5, 17])
def test_losses_match_loops(seed, b):
    pc, pr, rc, rr = rand_pairs(seed, b)
    for beta, ls in ((0.1, 0.0), (0.5, 0.1)):
        lists = (pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())
        got = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=ls)
        torch.testing.assert_close(got, torch.tensor(loop_dpo(*lists, beta, ls), dtype=torch.float64))
        got = ipo_loss(pc, pr, rc, rr, beta)
        torch.testing.assert_close(got, torch.tensor(loop_ipo(*lists, beta), dtype=torch.float64))
    gen = torch.Generator().manual_seed(seed)
    cl = torch.randint(1, 20, (b,), generator=gen)
    rl = torch.randint(1, 20, (b,), generator=gen)
    got = ipo_loss(pc, pr, rc, rr, 0.2, chosen_len=cl, rejected_len=rl, length_normalize=True)
    ref = loop_ipo(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), 0.2, cl.tolist(), rl.tolist())
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64))


def test_length_normalize_is_opt_in_and_validated():
    pc, pr, rc, rr = rand_pairs(0, 3)
    lens = torch.tensor([2, 3, 4])
    plain = ipo_loss(pc, pr, rc, rr, 0.1, chosen_len=lens, rejected_len=lens)  # lengths ignored by default
    torch.testing.assert_close(plain, ipo_loss(pc, pr, rc, rr, 0.1))
    with pytest.raises(ValueError, match="needs chosen_len"):
        ipo_loss(pc, pr, rc, rr, 0.1, length_normalize=True)
    with pytest.raises(ValueError, match="positive"):
        ipo_loss(pc, pr, rc, rr, 0.1, chosen_len=torch.tensor([0, 1, 1]), rejected_len=lens, length_normalize=True)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, 0.0)


def test_gradients_flow_only_through_policy():
    pc, pr, rc, rr = (t.clone().requires_grad_() for t in rand_pairs(1, 4))
    (dpo_loss(pc, pr, rc, rr, 0.1).sum() + ipo_loss(pc, pr, rc, rr, 0.1).sum()).backward()
    assert pc.grad is not None and pr.grad is not None
    assert torch.all(pc.grad != 0) and torch.all(pr.grad != 0)
    assert rc.grad is None and rr.grad is None
    # DPO pushes chosen up and rejected down
    pc.grad = pr.grad = None
    dpo_loss(pc, pr, rc, rr, 0.1).sum().backward()
    assert torch.all(pc.grad < 0) and torch.all(pr.grad > 0)


def test_reward_accuracy_and_implicit_rewards():
    pc = torch.tensor([-1.0, -5.0, -2.0])
    pr = torch.tensor([-2.0, -1.0, -2.0])
    ref = torch.zeros(3)
    assert reward_accuracy(pc, pr, ref, ref).tolist() == [True, False, False]  # a tie is not a win
    c, r = implicit_rewards(pc, pr, ref, ref, beta=0.5)
    torch.testing.assert_close(c, torch.tensor([-0.5, -2.5, -1.0]))
    torch.testing.assert_close(r, torch.tensor([-1.0, -0.5, -1.0]))


def loop_sequence_logprobs(logits, labels, mask):
    out = []
    for b in range(logits.shape[0]):
        s = 0.0
        for t in range(logits.shape[1]):
            if mask[b, t]:
                row = logits[b, t].tolist()
                mx = max(row)
                lse = mx + math.log(sum(math.exp(x - mx) for x in row))
                s += row[int(labels[b, t])] - lse
        out.append(s)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_sequence_logprobs_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    b, t, v = 3, 6, 11
    logits = torch.randn(b, t, v, generator=gen) * 3
    labels = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.rand(b, t, generator=gen) > 0.3
    labels = torch.where(mask, labels, torch.full_like(labels, -100))  # pads hold -100 like HF labels
    got = sequence_logprobs(logits, labels, mask)
    torch.testing.assert_close(got, torch.tensor(loop_sequence_logprobs(logits, labels, mask)), rtol=1e-5, atol=1e-5)


def test_sequence_logprobs_bf16_and_grad():
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(2, 4, 9, generator=gen) * 2).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 9, (2, 4), generator=gen)
    mask = torch.ones(2, 4, dtype=torch.bool)
    out = sequence_logprobs(logits, labels, mask)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.detach().float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.detach(), ref)
    out.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
