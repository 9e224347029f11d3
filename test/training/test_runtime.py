"""Resumable data order, checkpoints, schedule, losses, rollout masks, data specs."""

import numpy as np
import pytest
import torch
from torch import nn

from lens_training.data.specs import build_dataset, split_specs
from lens_training.losses import segmentation_loss
from lens_training.runtime import (
    ResumableBatches,
    cosine_schedule,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def test_two_processes_see_exactly_the_single_process_batches():
    single = iter(ResumableBatches(20, batch_size=4, seed=3))
    ranks = [iter(ResumableBatches(20, batch_size=2, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(12):  # crosses epoch boundaries (5 batches per epoch)
        expected = next(single)
        got = next(ranks[0]) + next(ranks[1])
        assert sorted(got) == sorted(expected)


def test_batches_resume_from_their_state():
    a = ResumableBatches(10, batch_size=3, seed=0)
    it = iter(a)
    seen = [next(it) for _ in range(4)]
    b = ResumableBatches(10, batch_size=3, seed=0)
    b.load_state_dict(ResumableBatches(10, 3, 0).state_dict())
    it_b = iter(b)
    assert [next(it_b) for _ in range(4)] == seen
    c = ResumableBatches(10, batch_size=3, seed=0)
    c.load_state_dict(a.state_dict())
    assert next(iter(c)) == next(it)


def test_checkpoint_round_trip_restores_weights_optimizer_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = cosine_schedule(opt, 2, 10, 0.1)
    batches = ResumableBatches(8, 2, 0)
    next(iter(batches))
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    sched.step()
    path = save_checkpoint(tmp_path, 1, model, opt, sched, batches, {"lr": 0.1})
    assert latest_checkpoint(tmp_path) == path
    expected_random = (torch.rand(3), np.random.rand(), __import__("random").random())
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(99)
    model2 = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    model2[0].weight.requires_grad_(False)
    model2[0].weight.data.copy_(reference["0.weight"])  # frozen weights come from the model, not the checkpoint
    opt2 = torch.optim.AdamW([p for p in model2.parameters() if p.requires_grad], lr=0.1)
    sched2 = cosine_schedule(opt2, 2, 10, 0.1)
    batches2 = ResumableBatches(8, 2, 0)
    state = load_checkpoint(path, model2, opt2, sched2, batches2)
    assert state["step"] == 1 and batches2.state_dict() == batches.state_dict()
    for k, v in model2.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    got_random = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(got_random[0], expected_random[0]) and got_random[1:] == expected_random[1:]


def test_old_checkpoints_are_pruned(tmp_path):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = cosine_schedule(opt, 0, 10, 0.0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, ResumableBatches(4, 1, 0), {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]


def test_cosine_schedule_warms_up_then_decays():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_schedule(opt, warmup_steps=2, total_steps=6, min_ratio=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))


def test_segmentation_loss_is_small_for_confident_correct_logits():
    gt = np.zeros((8, 8), bool)
    gt[:4] = True
    good = torch.where(torch.as_tensor(gt), 20.0, -20.0)
    bad = -good
    loss_good, parts = segmentation_loss([good], [gt])
    loss_bad, _ = segmentation_loss([bad], [gt])
    assert loss_good.item() < 1e-3 and loss_bad.item() > 10
    assert set(parts) == {"bce", "dice"}
    ignore = np.ones((8, 8), bool)
    ignore[0, 0] = False  # only one pixel counts, and it is right in `good`
    assert segmentation_loss([good], [gt], [ignore])[0].item() < 1e-3


def test_data_specs():
    assert split_specs("refcoco:/d:val, refcoco+:/d:testA") == ["refcoco:/d:val", "refcoco+:/d:testA"]
    ds = build_dataset("synthetic:val:3:64x48,synthetic:heldout:2:64x48")
    assert len(ds) == 5
    sample = ds[4]
    assert sample.image.shape == (48, 64, 3) and sample.meta["split"] == "heldout"
    with pytest.raises(ValueError, match="unknown data spec"):
        build_dataset("coco:/x")
