"""GRPO advantages and loss against a hand-computed example."""

import math

import pytest
import torch

from lens_training.grpo import group_advantages, grpo_loss, k3_kl


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, group_size=3)
    # group 1: mean 2, unbiased std 1; group 2: all equal -> 0
    expected = [-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4), 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-7)


def test_k3_kl_is_zero_at_equality_and_positive_otherwise():
    logp = torch.tensor([-1.0, -2.0])
    assert k3_kl(logp, logp).tolist() == [0.0, 0.0]
    ref = torch.tensor([-1.5, -1.0])
    # exp(d) - d - 1 with d = ref - logp
    assert k3_kl(logp, ref).tolist() == pytest.approx([math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1])


def _example():
    # two completions: lengths 2 and 1 (second token padded)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0], [-1.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([0.5, -1.0])
    return logp, ref, mask, adv


def test_single_step_loss_and_gradient_hand_computed():
    logp, ref, mask, adv = _example()
    beta = 0.04
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=beta)

    def kl(lp, r):
        return math.exp(r - lp) - (r - lp) - 1

    # ratio == 1 in value: per-token objective A - beta * KL, averaged per completion, then over completions
    c1 = ((0.5 - beta * kl(-1.0, -1.5)) + (0.5 - beta * kl(-2.0, -2.0))) / 2
    c2 = -1.0 - beta * kl(-0.5, -1.0)
    assert loss.item() == pytest.approx(-(c1 + c2) / 2, rel=1e-6)
    assert stats["kl"].item() == pytest.approx((kl(-1.0, -1.5) / 2 + kl(-0.5, -1.0)) / 2, rel=1e-6)
    assert stats["ratio"].item() == pytest.approx(1.0)

    loss.backward()

    # d/dlogp of -(1/N)(1/|o|)(A * ratio - beta * k3): ratio' = 1, k3' = 1 - exp(ref - logp)
    def grad(a, lp, r, length):
        return -(a - beta * (1 - math.exp(r - lp))) / length / 2

    expected = [[grad(0.5, -1.0, -1.5, 2), grad(0.5, -2.0, -2.0, 2)], [grad(-1.0, -0.5, -1.0, 1), 0.0]]
    assert logp.grad.tolist()[0] == pytest.approx(expected[0], rel=1e-6)
    assert logp.grad.tolist()[1] == pytest.approx(expected[1], rel=1e-6, abs=1e-12)


def test_clipping_does_not_change_the_single_step_loss():
    logp, ref, mask, adv = _example()
    unclipped, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, clip_eps=None)
    (g1,) = torch.autograd.grad(unclipped, logp)
    clipped, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, clip_eps=0.2)
    (g2,) = torch.autograd.grad(clipped, logp)
    assert clipped.item() == unclipped.item()
    assert torch.equal(g1, g2) and stats["clip_fraction"].item() == 0.0


def test_clipped_ratio_hand_computed():
    # ratio 1.5 with A = +1 clips to 1.2 (no gradient); ratio 0.5 with A = +1 keeps 0.5
    logp = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_()
    old = torch.zeros(1, 2)
    loss, stats = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.0, -0.5 / 2])
    assert stats["clip_fraction"].item() == pytest.approx(1.0)


def test_advantage_std_floor_keeps_jitter_small_and_choices_large():
    """Rewards differing by coordinate jitter (0.02) get unit advantages without a floor and
    ~0.05 with one; a group where one completion hit and one missed keeps unit advantages."""
    jitter = torch.tensor([0.80, 0.82])
    choice = torch.tensor([1.8, 0.0])
    plain = group_advantages(jitter, group_size=2)
    floored = group_advantages(jitter, group_size=2, std_floor=0.3)
    assert plain.abs().tolist() == pytest.approx([0.707, 0.707], abs=1e-2)
    assert floored.abs().max().item() < 0.05
    assert group_advantages(choice, 2, std_floor=0.3).tolist() == pytest.approx(
        group_advantages(choice, 2).tolist(), rel=1e-6
    ), "a std above the floor is left alone"
