"""Group-robust weighting: hand-computed values, loop-vs-vectorised, simplex invariants, paper semantics."""
from __future__ import annotations

import math

import pytest
import torch

from engine.algorithms.group_robust import (
    GroupWeightState,
    group_losses,
    importance_weights,
    mixed_weights,
    paper_scale,
    robust_loss,
    update_group_weights,
)


def loop_group_losses(losses: list[float], ids: list[int], k: int) -> tuple[list[float], list[int]]:
    sums, counts = [0.0] * k, [0] * k
    for loss, g in zip(losses, ids):
        sums[g] += loss
        counts[g] += 1
    return [s / c if c else 0.0 for s, c in zip(sums, counts)], counts


def loop_update(alpha, loss, eta, chi, scale, present):
    new = []
    for g in range(len(alpha)):
        step = eta * chi * loss[g] * (scale[g] if scale is not None else 1.0)
        if present is not None and not present[g]:
            step = 0.0
        new.append(alpha[g] * math.exp(step))
    z = sum(new)
    return [a / z for a in new]


def test_group_losses_hand_computed():
    losses = torch.tensor([1.0, 3.0, 2.0, 10.0])
    ids = torch.tensor([0, 0, 2, 2])
    mean, count = group_losses(losses, ids, 3)
    assert mean.tolist() == [2.0, 0.0, 6.0]
    assert count.tolist() == [2.0, 0.0, 2.0]


@pytest.mark.parametrize("seed", range(4))
def test_group_losses_matches_loop_and_is_differentiable(seed):
    gen = torch.Generator().manual_seed(seed)
    n, k = int(torch.randint(1, 40, (1,), generator=gen)), int(torch.randint(1, 7, (1,), generator=gen))
    losses = torch.rand(n, generator=gen, dtype=torch.float64).requires_grad_()
    ids = torch.randint(0, k, (n,), generator=gen)
    mean, count = group_losses(losses, ids, k)
    ref_mean, ref_count = loop_group_losses(losses.tolist(), ids.tolist(), k)
    torch.testing.assert_close(mean, torch.tensor(ref_mean, dtype=torch.float64))
    assert count.tolist() == [float(c) for c in ref_count]
    mean.sum().backward()
    expected_grad = [1.0 / ref_count[g] for g in ids.tolist()]
    torch.testing.assert_close(losses.grad, torch.tensor(expected_grad, dtype=torch.float64))


def test_group_losses_rejects_bad_ids():
    with pytest.raises(ValueError, match="group_ids must lie"):
        group_losses(torch.ones(3), torch.tensor([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="same shape"):
        group_losses(torch.ones(3), torch.tensor([0, 1]), 3)


def test_update_hand_computed():
    alpha = torch.tensor([0.5, 0.5])
    new = update_group_weights(alpha, torch.tensor([math.log(3.0), 0.0]), eta=1.0)
    torch.testing.assert_close(new, torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("seed", range(5))
def test_update_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(2, 8, (1,), generator=gen))
    alpha = torch.rand(k, generator=gen, dtype=torch.float64) + 0.01
    alpha = alpha / alpha.sum()
    loss = torch.rand(k, generator=gen, dtype=torch.float64) * 3
    scale = torch.rand(k, generator=gen, dtype=torch.float64) * 4
    present = torch.rand(k, generator=gen) > 0.3
    eta, chi = 0.7, float(torch.rand((), generator=gen))
    new = update_group_weights(alpha, loss, eta, chi=chi, scale=scale, present=present)
    ref = loop_update(alpha.tolist(), loss.tolist(), eta, chi, scale.tolist(), present.tolist())
    torch.testing.assert_close(new, torch.tensor(ref, dtype=torch.float64))


def test_update_stays_on_simplex_moves_to_worst_group_and_never_mutates():
    alpha = torch.full((4,), 0.25)
    before = alpha.clone()
    loss = torch.tensor([0.1, 0.9, 0.3, 0.2])
    for _ in range(50):
        new = update_group_weights(alpha, loss, eta=0.5)
        assert torch.all(new >= 0)
        assert abs(float(new.sum()) - 1.0) < 1e-6
        assert new[1] > alpha[1]  # the worst group gains weight every step
        alpha = new
    assert torch.equal(before, torch.full((4,), 0.25))
    assert int(alpha.argmax()) == 1 and float(alpha[1]) > 0.99


def test_update_detached_and_no_overflow():
    loss = torch.tensor([1000.0, 1.0], requires_grad=True)
    new = update_group_weights(torch.tensor([0.5, 0.5]), loss, eta=10.0)
    assert not new.requires_grad
    assert torch.isfinite(new).all()
    torch.testing.assert_close(new, torch.tensor([1.0, 0.0]))


def test_absent_groups_do_not_move_relatively():
    alpha = torch.tensor([0.2, 0.3, 0.5])
    loss = torch.tensor([2.0, 123.0, 0.0])  # group 1 absent: its "loss" is junk and must be ignored
    new = update_group_weights(alpha, loss, eta=1.0, present=torch.tensor([True, False, True]))
    ref = loop_update(alpha.tolist(), [2.0, 0.0, 0.0], 1.0, 1.0, None, None)
    torch.testing.assert_close(new, torch.tensor(ref))
    # the absent group's ratio to another unexponentiated group is unchanged
    torch.testing.assert_close(new[1] / new[2], alpha[1] / alpha[2])


def test_chi_zero_freezes_alpha_and_gives_uniform_weights():
    alpha = torch.tensor([0.7, 0.2, 0.1])
    new = update_group_weights(alpha, torch.tensor([5.0, 1.0, 9.0]), eta=1.0, chi=0.0)
    torch.testing.assert_close(new, alpha)
    torch.testing.assert_close(mixed_weights(new, 0.0), torch.full((3,), 1 / 3))
    torch.testing.assert_close(mixed_weights(new, 1.0), alpha)
    torch.testing.assert_close(mixed_weights(alpha, 0.5), 0.5 / 3 + 0.5 * alpha)


def test_mixed_weights_sum_to_one():
    for chi in (0.0, 0.3, 1.0):
        w = mixed_weights(torch.tensor([0.6, 0.3, 0.1]), chi)
        assert abs(float(w.sum()) - 1.0) < 1e-6 and torch.all(w >= 0)


def test_robust_loss_treats_weights_as_constants():
    gl = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([0.25, 0.75], requires_grad=True)
    out = robust_loss(gl, w)
    assert float(out.detach()) == pytest.approx(0.25 + 1.5)
    out.backward()
    assert gl.grad.tolist() == [0.25, 0.75]
    assert w.grad is None


def test_importance_and_paper_scale():
    counts = torch.tensor([10, 30, 0, 60])
    iw = importance_weights(counts)
    expected = torch.tensor([1 / 10, 1 / 30, 0.0, 1 / 60])
    torch.testing.assert_close(iw, expected / expected.sum())
    torch.testing.assert_close(paper_scale(counts), torch.tensor([10.0, 100 / 30, 0.0, 100 / 60]))
    with pytest.raises(ValueError):
        importance_weights(torch.tensor([0, 0]))


def test_full_step_gradient_uses_new_alpha():
    # One GR step end to end: policy-gradient weights are the mixed weights of the UPDATED alpha.
    per_example = torch.tensor([1.0, 1.0, 3.0], requires_grad=True)
    ids = torch.tensor([0, 0, 1])
    gl, counts = group_losses(per_example, ids, 2)
    alpha = update_group_weights(torch.tensor([0.5, 0.5]), gl, eta=0.5, present=counts > 0)
    robust_loss(gl, mixed_weights(alpha, 1.0)).backward()
    a1 = math.exp(1.5) / (math.exp(0.5) + math.exp(1.5))
    torch.testing.assert_close(per_example.grad, torch.tensor([(1 - a1) / 2, (1 - a1) / 2, a1]))


def test_state_round_trip_and_validation():
    s = GroupWeightState.from_tensor(torch.tensor([0.25, 0.75]))
    assert GroupWeightState.from_dict(s.to_dict()) == s
    torch.testing.assert_close(s.to_tensor(), torch.tensor([0.25, 0.75]))
    assert GroupWeightState.uniform(4).alpha == (0.25,) * 4
    with pytest.raises(ValueError):
        GroupWeightState.from_dict({"alpha": [0.5, 0.6]})
    with pytest.raises(ValueError):
        GroupWeightState.from_dict({})


def test_group_losses_accepts_bool_for_accuracies():
    acc, count = group_losses(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 1]), 2)
    assert acc.tolist() == [0.5, 1.0] and count.tolist() == [2.0, 2.0]
