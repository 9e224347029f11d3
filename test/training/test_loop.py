"""The shared optimisation loop: accumulation, resume, freeze, logging (on a toy objective)."""

import torch
from safetensors.torch import load_file
from toy_lens_free_objective import ToyObjective, toy_dataset

from lens_training.config import Stage1Config, load_config
from lens_training.loop import setup_process, train


def _cfg(tmp_path, name, **overrides):
    base = dict(
        out_dir=str(tmp_path / name),
        lr=1e-2,
        max_steps=6,
        batch_size=4,
        ckpt_every=2,
        tensorboard=False,
        progress=False,
        warmup_steps=1,
        seed=1,
        device="cpu",
    )
    base.update(overrides)
    return load_config(Stage1Config, None, [f"{k}={v}" for k, v in base.items()])


def _run(cfg):
    torch.manual_seed(0)
    objective = ToyObjective()
    device, ctx = setup_process(cfg)
    return objective, train(cfg, objective, toy_dataset(), device, ctx, "toy")


def test_loss_goes_down_and_frozen_weights_stay(tmp_path):
    torch.manual_seed(0)
    reference = ToyObjective().state_dict()
    objective, result = _run(_cfg(tmp_path, "a", max_steps=15))
    losses = [h["toy/loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert torch.equal(objective.frozen.weight, reference["frozen.weight"])
    assert not torch.equal(objective.head.weight, reference["head.weight"])
    saved = load_file(str(result.final_dir / "trainable.safetensors"))
    assert set(saved) == {"head.weight", "head.bias"}


def test_gradient_accumulation_equals_the_bigger_batch(tmp_path):
    # 2 micro-batches of 2 see the same 4 samples: same update (dropout off for exactness)
    def run_no_dropout(cfg):
        torch.manual_seed(0)
        objective = ToyObjective()
        objective.dropout.p = 0.0
        device, ctx = setup_process(cfg)
        train(cfg, objective, toy_dataset(), device, ctx, "toy")
        return objective

    big = run_no_dropout(_cfg(tmp_path, "big2", batch_size=4, grad_accum=1, max_steps=1))
    acc = run_no_dropout(_cfg(tmp_path, "acc", batch_size=2, grad_accum=2, max_steps=1))
    torch.testing.assert_close(acc.head.weight, big.head.weight, rtol=0, atol=1e-6)


def test_accumulated_gradient_is_the_bigger_batch_gradient(tmp_path):
    # Adam's first step hardly depends on the gradient's scale, so the weights above cannot
    # tell a sum of micro-batch gradients from their mean: compare the gradients themselves.
    def head_gradient(cfg):
        torch.manual_seed(0)
        objective = ToyObjective()
        objective.dropout.p = 0.0
        grads = []
        objective.head.weight.register_hook(lambda g: grads.append(g.detach().clone()))
        device, ctx = setup_process(cfg)
        train(cfg, objective, toy_dataset(), device, ctx, "toy")
        return torch.stack(grads).sum(0)

    big = head_gradient(_cfg(tmp_path, "big3", batch_size=4, grad_accum=1, max_steps=1))
    acc = head_gradient(_cfg(tmp_path, "acc3", batch_size=2, grad_accum=2, max_steps=1))
    assert big.abs().max() > 0
    torch.testing.assert_close(acc, big, rtol=1e-5, atol=1e-7)


class _Killed(Exception):
    pass


def test_resume_continues_bit_identically(tmp_path, monkeypatch):
    full, _ = _run(_cfg(tmp_path, "full"))
    # the same run dies right after writing its step-4 checkpoint, then resumes in a fresh process state
    import lens_training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(directory, step, *args, **kwargs):
        path = real_save(directory, step, *args, **kwargs)
        if step == 4:
            torch.manual_seed(12345)  # the dead process's RNG must not matter
            raise _Killed
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    try:
        _run(_cfg(tmp_path, "cut"))
    except _Killed:
        pass
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert (tmp_path / "cut/checkpoints/latest").read_text() == "step-00000004"
    resumed, result = _run(_cfg(tmp_path, "cut"))
    assert result.steps == 6 and len(result.history) == 2
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_time_limit_stops_early_and_still_saves_the_final_model(tmp_path):
    # 1e-6 min is over after the first step: the run ends there instead of at step 500
    objective, result = _run(_cfg(tmp_path, "timed", max_steps=500, max_minutes=1e-6, ckpt_every=0))
    assert result.steps == 1
    saved = load_file(str(result.final_dir / "trainable.safetensors"))
    assert torch.equal(saved["head.weight"], objective.head.weight.detach())
