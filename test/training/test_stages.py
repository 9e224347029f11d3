"""Stage 1 and stage 2 on the tiny random LENS model: freeze sets, loss goes down."""

import math

import numpy as np
import pytest
import torch
from scripted_rollouts import WRONG, ScriptedRollouts, right_answer

from lens_training.config import Stage1Config, Stage2Config, load_config
from lens_training.data.dataset import ListDataset, collate
from lens_training.stage1 import Stage1Objective, train_stage1
from lens_training.stage2 import Stage2Objective, train_stage2


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _step(objective, batch, lr):
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    objective.train()
    loss, scalars = objective(objective.prepare(batch))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), scalars


def test_stage1_trains_only_the_context_module(tiny_lens, world_batch_samples):
    objective = Stage1Objective(tiny_lens)
    before = _snapshot(tiny_lens)
    _step(objective, collate(world_batch_samples[:2]), lr=1e-3)
    changed = _changed(tiny_lens, before)
    assert changed, "nothing changed"
    assert all(n.startswith("context.") for n in changed), sorted(n for n in changed if not n.startswith("context."))
    assert any(n.startswith("context.learnable_query") for n in changed)
    assert any(n.startswith("context.proj_to_sam") for n in changed)


def test_stage1_steps_reduce_the_loss_on_a_fixed_batch(tiny_lens, world_batch_samples):
    objective = Stage1Objective(tiny_lens)
    batch = collate(world_batch_samples[:2])
    losses = [_step(objective, batch, lr=3e-3)[0] for _ in range(6)]
    assert losses[-1] < losses[0], losses


def _stage2_cfg(**kw):
    base = dict(group_size=2, max_new_tokens=8, cot=True, beta=0.04, lr=1e-3)
    base.update(kw)
    return load_config(Stage2Config, None, [f"{k}={v}" for k, v in base.items()])


def test_stage2_freeze_set_image_encoder_and_vision_tower_stay(tiny_lens, world_batch_samples):
    torch.manual_seed(0)
    objective = Stage2Objective(tiny_lens, _stage2_cfg())
    before = _snapshot(tiny_lens)
    _, scalars = _step(objective, collate(world_batch_samples[:2]), lr=1e-3)
    changed = _changed(tiny_lens, before)
    assert not any(".image_encoder." in n for n in changed)
    assert not any(n.startswith("mllm.model.model.visual") or n.startswith("mllm.model.visual") for n in changed)
    assert any(n.startswith("mllm.model.model.language_model") for n in changed)
    assert any(n.startswith("context.") for n in changed)
    assert any(".mask_decoder." in n for n in changed)
    assert any(".prompt_encoder." in n for n in changed)  # the "no mask" dense embedding
    # the reference stays frozen and is not what trains
    assert all(not p.requires_grad for p in objective.reference.parameters())
    for key in ("reward_box", "reward_mask", "reward_format", "reward_total", "kl", "policy_loss", "seg_loss"):
        assert key in scalars, key


def test_stage2_steps_reduce_the_loss_on_a_fixed_batch(tiny_lens, world_batch_samples):
    torch.manual_seed(0)
    objective = Stage2Objective(tiny_lens, _stage2_cfg(beta=0.0))
    batch = collate(world_batch_samples[:2])
    losses = [_step(objective, batch, lr=1e-3)[0] for _ in range(5)]
    assert losses[-1] < losses[0], losses


def test_stage2_lora_trains_adapters_not_base_weights(tiny_lens, world_batch_samples):
    torch.manual_seed(0)
    objective = Stage2Objective(tiny_lens, _stage2_cfg(lora=True, lora_r=4))
    before = _snapshot(tiny_lens)
    _step(objective, collate(world_batch_samples[:2]), lr=1e-3)
    changed = {n for n in _changed(tiny_lens, before) if n.startswith("mllm.")}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert objective.reference is None  # the reference is the base with adapters off


def test_train_functions_run_from_python_and_export_a_bundle(tmp_path, tiny_lens, world_batch_samples):
    from lens_ros.model.bundle import is_bundle, load_bundle

    data = ListDataset(world_batch_samples)
    cfg1 = load_config(
        Stage1Config,
        None,
        [
            f"out_dir={tmp_path / 's1'}",
            "max_steps=2",
            "batch_size=2",
            "tensorboard=true",
            "progress=false",
            "device=cpu",
        ],
    )
    result = train_stage1(cfg1, dataset=data, model=tiny_lens)
    assert result.steps == 2 and is_bundle(result.final_dir)
    assert list((tmp_path / "s1/tensorboard").iterdir())
    cfg2 = load_config(
        Stage2Config,
        None,
        [
            f"out_dir={tmp_path / 's2'}",
            "max_steps=1",
            "batch_size=1",
            "group_size=2",
            "max_new_tokens=6",
            "progress=false",
            "tensorboard=false",
            "device=cpu",
            f"init_from={result.final_dir}",
        ],
    )
    reloaded = load_bundle(result.final_dir)
    result2 = train_stage2(cfg2, dataset=data, model=reloaded)
    assert result2.steps == 1 and is_bundle(result2.final_dir)
    assert "stage2/reward_mask" in result2.history[0]


def test_teacher_answer_uses_the_mllm_frame(tiny_lens):
    from lens_ros.model.prompts import parse_answer
    from lens_training.stage1 import mllm_box, teacher_answer

    # the tiny model's MLLM sees at most 64x64 pixels: a 128x96 image is resized by about 1/2
    box = mllm_box(tiny_lens, (96, 128), (16, 32, 64, 96))
    packed = tiny_lens.mllm.pack(np.zeros((96, 128, 3), np.uint8))
    h, w = packed.resized_hw
    assert box == pytest.approx((16 * w / 128, 32 * h / 96, 64 * w / 128, 96 * h / 96))
    cot = parse_answer(teacher_answer(tiny_lens, (96, 128), "the cup", (16, 32, 64, 96), "it is red", cot=True))
    assert cot.format_ok and cot.think == "it is red" and cot.box is not None
    plain = teacher_answer(tiny_lens, (96, 128), "the cup", (16, 32, 64, 96), "", cot=False)
    assert plain.startswith("<|object_ref_start|>the cup") and "<|box_start|>(" in plain
    assert parse_answer(plain).box == pytest.approx(tuple(round(v) for v in box))


def test_lora_run_exports_a_merged_bundle(tmp_path, tiny_lens, world_batch_samples):
    import copy

    from lens_ros.model.bundle import load_bundle
    from lens_training.export import export_run

    base = copy.deepcopy(tiny_lens)
    base_dir = tmp_path / "base"
    from lens_ros.model.bundle import save_bundle

    save_bundle(base_dir, base)
    cfg = load_config(
        Stage2Config,
        None,
        [
            f"out_dir={tmp_path / 'lora'}",
            "max_steps=1",
            "batch_size=1",
            "group_size=2",
            "max_new_tokens=6",
            "lora=true",
            "lora_r=4",
            "lr=1e-2",
            "progress=false",
            "tensorboard=false",
            "device=cpu",
        ],
    )
    result = train_stage2(cfg, dataset=ListDataset(world_batch_samples), model=tiny_lens)
    trained = load_bundle(result.final_dir)  # merged at the end of the run
    assert not any("lora_" in k for k in trained.state_dict())
    exported = load_bundle(export_run(tmp_path / "lora", str(base_dir), tmp_path / "exported"))
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert any(k.startswith("mllm.model.model.language_model") for k in changed)


def test_loop_rollouts_never_contain_image_tokens(tiny_lens, world_batch_samples):
    from lens_training.rollout import RolloutRequest, SamplingSettings, build_engine

    engine = build_engine("loop", mllm=tiny_lens.mllm)
    calls = []
    real = engine.generator.generate

    def spy(inputs, settings, engine="loop"):
        calls.append(engine)
        return real(inputs, settings, engine=engine)

    engine.generator.generate = spy
    images = [s.image for s in world_batch_samples[:2]]
    exprs = [s.expression for s in world_batch_samples[:2]]
    request = RolloutRequest(tiny_lens.prepare(images, exprs).mllm, exprs, images)
    torch.manual_seed(0)
    for _ in range(3):
        rollouts = engine.generate(request, SamplingSettings(num_samples=1, max_new_tokens=24))
        assert not any(t in engine.banned for ids in rollouts.completion_ids for t in ids)
    assert calls[0] == "loop"  # the fast decoder first; "hf" only when a banned token was sampled


def test_jittered_boxes_are_deterministic_near_the_truth_and_inside_the_image():
    from lens_training.stage1 import jittered_boxes

    gt = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 8.0, 8.0]])
    a = jittered_boxes(gt, [(48, 64), (48, 64)], "key")
    b = jittered_boxes(gt, [(48, 64), (48, 64)], "key")
    c = jittered_boxes(gt, [(48, 64), (48, 64)], "other")
    np.testing.assert_array_equal(np.stack(a), np.stack(b))  # a resumed run sees the same noise
    assert not np.array_equal(np.stack(a), np.stack(c))
    for box in a + c:
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 48
    assert np.abs(np.stack(a)[0] - gt[0].numpy()).max() < 0.5 * 40  # noise scale 0.1 x box side


def test_stage1_of_a_box_prompt_model_prompts_with_the_box(tiny_lens, world_batch_samples):
    """The box reaches the segmenter: the masks differ from the context prompt alone."""
    batch = collate(world_batch_samples[:2])
    plain = Stage1Objective(tiny_lens)
    prepared = plain.prepare(batch)
    assert prepared["boxes"] is None
    tiny_lens.config.box_prompt = True
    boxed = Stage1Objective(tiny_lens)
    prepared_box = boxed.prepare(batch)
    assert len(prepared_box["boxes"]) == 2
    with torch.no_grad():
        a = tiny_lens(prepared["inputs"], compute_logprobs=False).mask_logits
        b = tiny_lens(prepared_box["inputs"], compute_logprobs=False, boxes=prepared_box["boxes"]).mask_logits
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    loss, _ = _step(boxed, batch, lr=1e-3)
    assert np.isfinite(loss)


def test_stage2_of_a_box_prompt_model_uses_each_rollouts_own_box(tiny_lens, world_batch_samples):
    from lens_training.stage2 import rollout_box

    assert rollout_box("<answer>[10,20,30,40]</answer>", (24, 32), (48, 64)) == (20.0, 40.0, 60.0, 80.0)
    assert rollout_box("no box here", (24, 32), (48, 64)) is None
    torch.manual_seed(0)
    tiny_lens.config.box_prompt = True
    objective = Stage2Objective(tiny_lens, _stage2_cfg())
    prepared = objective.prepare(collate(world_batch_samples[:2]))
    assert len(prepared.prompt_boxes) == 4  # 2 prompts x group of 2
    loss, scalars = objective(prepared)
    assert np.isfinite(loss.item()) and "reward_mask" in scalars


def test_stage2_gradient_is_the_grpo_policy_gradient_of_rewards_that_differ(tiny_lens, world_batch_samples):
    """Two completions of one prompt, one right (format + box reward ~2) and one wrong (0):
    the stage-2 loss's gradient on the MLLM is -1/G sum_i A_i / |o_i| sum_t grad log pi(o_i,t),
    with A = +-(r_1 - r_2)/2 / (std + 1e-4) computed here by hand."""
    from lens_training.stage2 import mllm_logprobs

    sample = world_batch_samples[0]
    # the segmentation loss and the mask reward off: what moves the MLLM is the policy term alone
    cfg = _stage2_cfg(beta=0.0, seg_loss_weight=0.0, mask_reward_weight=0.0)
    objective = Stage2Objective(
        tiny_lens, cfg, engine=ScriptedRollouts(tiny_lens.mllm, [right_answer(tiny_lens, sample), WRONG])
    )
    objective.train()
    prepared = objective.prepare(collate([sample]))
    loss, scalars = objective(prepared)

    # rewards by hand: the right completion gets format 1 + box IoU^2 (its box is the ground truth,
    # rounded to whole MLLM pixels), the wrong one nothing
    assert scalars["reward_format"] == pytest.approx(0.5)
    assert 0.4 < scalars["reward_box"] <= 0.5, scalars
    r_right = 1.0 + 2 * scalars["reward_box"]
    std = math.sqrt(r_right**2 / 2)  # unbiased std of (r_right, 0)
    advantages = torch.tensor([r_right / 2, -r_right / 2]) / (std + 1e-4)
    assert scalars["reward_std"] == pytest.approx(std, rel=1e-5)

    params = [p for n, p in tiny_lens.named_parameters() if n.startswith("mllm.") and p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    logp = mllm_logprobs(tiny_lens.mllm, prepared.inputs.mllm)
    mask = prepared.inputs.mllm.completion_mask.clone().float()
    mask[:, 0] = 0
    per_completion = (torch.exp(logp - logp.detach()) * mask).sum(dim=1) / mask.sum(dim=1)
    expected_loss = -(advantages * per_completion).mean()
    expected = torch.autograd.grad(expected_loss, params, allow_unused=True)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-6)  # 0: the advantages sum to 0
    norm = math.sqrt(sum(float((e * e).sum()) for e in expected if e is not None))
    assert norm > 1e-3, "the hand-computed policy gradient vanished: the test would see nothing"
    for g, e, p in zip(got, expected, params, strict=True):
        g = torch.zeros_like(p) if g is None else g
        e = torch.zeros_like(p) if e is None else e
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6 * norm)


def test_stage2_trains_the_segmenter_only_on_rollouts_whose_box_hits(tiny_lens, world_batch_samples):
    """seg_loss_on_misses off: BCE + Dice over the completion whose box is on the target only
    (a box around something else must not teach the segmenter to draw the target from it)."""
    from lens_training.losses import segmentation_loss

    sample = world_batch_samples[0]
    tiny_lens.config.box_prompt = True
    cfg = _stage2_cfg(beta=0.0, seg_loss_on_misses=False)
    engine = ScriptedRollouts(tiny_lens.mllm, [right_answer(tiny_lens, sample), WRONG])
    objective = Stage2Objective(tiny_lens, cfg, engine=engine)
    objective.eval()
    prepared = objective.prepare(collate([sample]))
    _, scalars = objective(prepared)
    assert scalars["reward_hit"] == 0.5 and scalars["seg_loss_rows"] == 0.5
    assert scalars["zero_variance_groups"] == 0.0
    with torch.no_grad():
        out = tiny_lens(
            prepared.inputs, compute_logprobs=False, embeddings=prepared.embeddings, boxes=prepared.prompt_boxes
        )
    logits = [m[0] for m in out.mask_logits]
    weights = (cfg.bce_weight, cfg.dice_weight)
    hit_only, _ = segmentation_loss(logits[:1], prepared.masks[:1], prepared.ignores[:1], *weights)
    every, _ = segmentation_loss(logits, prepared.masks, prepared.ignores, *weights)
    assert scalars["seg_loss"] == pytest.approx(hit_only.item(), rel=1e-6, abs=1e-7)
    assert abs(every.item() - hit_only.item()) > 2e-5, "the rows' losses differ, so the test can tell them apart"
