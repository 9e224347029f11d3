"""Unified rewards on hand-built cases."""

import numpy as np
import pytest
import torch

from lens_ros.model.prompts import parse_answer
from lens_training.rewards import (
    RewardWeights,
    box_iou,
    box_iou_reward,
    box_l1_reward,
    format_reward,
    mask_iou_reward,
    unified_rewards,
)

GOOD = "<think>the red cup is left</think><answer>[10,10,20,20]</answer>"


def test_perfect_box_is_one_and_disjoint_is_zero():
    assert box_iou_reward(parse_answer(GOOD), [10, 10, 20, 20]) == 1.0
    assert box_iou_reward(parse_answer(GOOD), [30, 30, 40, 40]) == 0.0


def test_box_reward_is_iou_squared():
    # pred 10x10 at (10,10), gt 10x20 at (10,10): IoU 0.5 -> reward 0.25
    assert box_iou([10, 10, 20, 20], [10, 10, 20, 30]) == pytest.approx(0.5)
    assert box_iou_reward(parse_answer(GOOD), [10, 10, 20, 30]) == pytest.approx(0.25)


def test_malformed_answers_get_format_zero():
    assert format_reward(parse_answer(GOOD)) == 1.0
    for bad in [
        "[10,10,20,20]",  # no tags
        "<think>x</think>[10,10,20,20]",  # no answer tags
        "<answer>[10,10,20,20]</answer>",  # no think
        "<think>x</think><answer>left cup</answer>",  # tags but no box
        "<think>x<answer>[1,2,3,4]</answer>",  # unclosed think
        "",
    ]:
        assert format_reward(parse_answer(bad)) == 0.0, bad
    assert box_iou_reward(parse_answer("no box here"), [0, 0, 1, 1]) == 0.0


def test_box_l1_reward():
    parsed = parse_answer("<answer>[0,0,10,10]</answer>")
    assert box_l1_reward(parsed, [0, 0, 10, 10], (100, 100)) == 1.0
    assert box_l1_reward(parsed, [10, 10, 20, 20], (100, 100)) == pytest.approx(0.9)


def test_mask_reward_is_iou_squared_of_positive_logits():
    gt = np.zeros((4, 4), bool)
    gt[:2, :] = True  # 8 pixels
    logits = torch.full((4, 4), -5.0)
    logits[:2, :2] = 5.0  # 4 pixels inside the gt -> IoU 0.5
    assert mask_iou_reward(logits, gt) == pytest.approx(0.25)
    assert mask_iou_reward(torch.where(torch.as_tensor(gt), 1.0, -1.0), gt) == 1.0
    assert mask_iou_reward(-torch.ones(4, 4), gt) == 0.0


def test_mask_reward_upsamples_low_resolution_logits_to_the_gt():
    gt = np.zeros((8, 8), bool)
    gt[:, :4] = True
    low = torch.tensor([[5.0, -5.0], [5.0, -5.0]])
    assert mask_iou_reward(low, gt) == 1.0


def test_unified_rewards_are_named_and_summed():
    completions = [GOOD, "garbage"]
    gt_boxes = [[10, 10, 20, 20]] * 2
    gt = np.zeros((30, 30), bool)
    gt[10:20, 10:20] = True
    logits = [torch.where(torch.as_tensor(gt), 3.0, -3.0), -torch.ones(30, 30)]
    out = unified_rewards(completions, gt_boxes, [(30, 30)] * 2, logits, [gt, gt], RewardWeights(), use_format=True)
    assert out["format"].tolist() == [1.0, 0.0]
    assert out["box"].tolist() == [1.0, 0.0]
    assert out["mask"].tolist() == [1.0, 0.0]
    assert out["total"].tolist() == [3.0, 0.0]
    scaled = unified_rewards(
        [GOOD], [[20, 20, 40, 40]], [(60, 60)], None, None, RewardWeights(), False, box_scales=[(2.0, 2.0)]
    )
    assert scaled["box"].tolist() == [1.0] and "format" not in scaled and "mask" not in scaled


def test_hit_reward_says_whether_the_box_is_on_the_target():
    from lens_training.rewards import hit_reward

    target = [10, 10, 20, 20]
    assert hit_reward(parse_answer(GOOD), target) == 1.0
    assert hit_reward(parse_answer(GOOD), [11, 11, 21, 21]) == 1.0  # jitter: still the target
    assert hit_reward(parse_answer(GOOD), [30, 30, 40, 40]) == 0.0  # another object
    assert hit_reward(parse_answer("no box here"), target) == 0.0
    weighted = unified_rewards([GOOD], [target], [(30, 30)], None, None, RewardWeights(hit=2.0), use_format=False)
    assert weighted["hit"].tolist() == [1.0] and weighted["total"].tolist() == [3.0]
    unweighted = unified_rewards([GOOD], [target], [(30, 30)], None, None, RewardWeights(), use_format=False)
    assert unweighted["hit"].tolist() == [1.0] and unweighted["total"].tolist() == [1.0]
