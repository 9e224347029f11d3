"""GRPO (Shao et al., 2024) as LENS uses it, written out term by term.

For a prompt q, G completions o_1..o_G are sampled from the policy; each gets a scalar
reward r_i (sum of the unified rewards). Then, per completion token t:

    A_i        = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + 1e-4)          group advantage
    ratio_i,t  = pi_theta(o_i,t | q, o_i,<t) / pi_old(o_i,t | q, o_i,<t)
    surr_i,t   = min(ratio * A_i, clip(ratio, 1 - eps, 1 + eps) * A_i)      (clip optional)
    KL_i,t     = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1             k3 estimator
    L          = - 1/G sum_i 1/|o_i| sum_t (surr_i,t - beta * KL_i,t)

With one optimisation step per batch of rollouts, pi_old is pi_theta detached: the ratio
is 1 in value, its gradient is grad log pi_theta, the clip never binds, and L equals the
official single-step loss ``-(exp(logp - logp.detach()) * A - beta * KL)``.
std is the unbiased sample std (torch default), as in the TRL-derived official trainer.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4, std_floor: float = 0.0) -> torch.Tensor:
    """(B * G,) rewards, grouped consecutively by prompt -> (B * G,) advantages.

    A = (r - mean_group) / (max(std_group, std_floor) + eps). With ``std_floor`` 0 (LENS) a
    group whose rewards differ by a little coordinate jitter gets unit advantages, as large
    as a group where one completion chose the right object and another the wrong one; a
    floor keeps such small differences small.
    """
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std.clamp(min=std_floor) + eps)).view(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float = 0.04,
    clip_eps: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO policy loss.

    logp, old_logp, ref_logp: (N, T) token log-probs of the completions under the policy
        (with grad), the sampling policy and the frozen reference (None: no KL term).
    advantages: (N,) from ``group_advantages``.  completion_mask: (N, T) 1 on completion tokens.
    clip_eps: None for the official unclipped loss, e.g. 0.2 for multi-step updates.
    Returns (loss, stats) with stats detached: kl, ratio mean, clip fraction.
    """
    mask = completion_mask.to(logp.dtype)
    adv = advantages.unsqueeze(1)  # (N, 1) broadcast over tokens
    # ratio_i,t = pi_theta / pi_old
    ratio = torch.exp(logp - old_logp)
    # surrogate objective, optionally clipped (PPO)
    surrogate = ratio * adv
    if clip_eps is not None:
        clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
        surrogate = torch.min(surrogate, clipped)
    # k3 KL to the reference, beta-weighted
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    per_token_loss = -(surrogate - beta * kl)
    # mean over each completion's tokens, then over completions
    tokens_per_completion = mask.sum(dim=1).clamp(min=1)
    loss = ((per_token_loss * mask).sum(dim=1) / tokens_per_completion).mean()
    with torch.no_grad():
        denominator = mask.sum().clamp(min=1)
        clip_fraction = torch.zeros((), device=logp.device)
        if clip_eps is not None:
            clipped_tokens = ((ratio - 1).abs() > clip_eps).to(mask.dtype)
            clip_fraction = (clipped_tokens * mask).sum() / denominator
        stats = {
            "kl": ((kl * mask).sum(dim=1) / tokens_per_completion).mean().detach(),
            "ratio": ((ratio * mask).sum() / denominator).detach(),
            "clip_fraction": clip_fraction,
        }
    return loss, stats
