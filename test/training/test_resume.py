"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lens_training.config import Stage1Config, Stage2Config, load_config
from lens_training.data.dataset import ListDataset
from lens_training.stage1 import train_stage1
from lens_training.stage2 import train_stage2

ROOT = Path(__file__).resolve().parents[2]
COMMON = [
    "data=synthetic:train:16:64x48",
    "max_steps=8",
    "ckpt_every=2",
    "batch_size=2",
    "lr=3e-3",
    "warmup_steps=2",
    "progress=false",
    "tensorboard=false",
    "num_threads=1",
    "device=cpu",
    "seed=0",
]


def _assert_same_weights(a: Path, b: Path):
    wa, wb = load_file(str(a / "trainable.safetensors")), load_file(str(b / "trainable.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"resumed run differs in {different[:5]}"


@pytest.mark.slow
def test_stage1_killed_with_sigkill_resumes_bit_identically(tmp_path, tiny_lens):
    # uninterrupted, in this process (tiny-random seed 0 is the fixture's model)
    cfg = load_config(Stage1Config, None, [f"out_dir={tmp_path / 'full'}", *COMMON])
    full = train_stage1(cfg, model=tiny_lens)

    command = [sys.executable, "-m", "lens_training.cli", "stage1", f"out_dir={tmp_path / 'killed'}", *COMMON]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "killed/checkpoints/latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if latest.is_file() and latest.read_text() >= "step-00000004":
            break
        time.sleep(0.02)
    assert process.poll() is None, f"run ended before it could be killed: {process.stderr.read().decode()[-2000:]}"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed/final").exists()

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    _assert_same_weights(full.final_dir, tmp_path / "killed/final")


class _Killed(Exception):
    pass


def _mean_logprob(model, sample, text: str) -> float:
    """Mean per-token log-prob of ``text`` as the CoT completion for ``sample``."""
    from scripted_rollouts import completion_ids

    from lens_training.stage2 import mllm_logprobs

    inputs = model.prepare([sample.image], [sample.expression], completion_ids(model.mllm, [text]), cot=True).mllm
    mask = inputs.completion_mask.clone()
    mask[:, 0] = False
    with torch.no_grad():
        return float(mllm_logprobs(model.mllm, inputs)[mask].mean())


def test_stage2_resume_reproduces_sampling_and_weights(tmp_path, tiny_lens, world_batch_samples, monkeypatch):
    """Rollouts are a coin per row between the right answer and a wrong one (rewards that
    differ, drawn from torch's RNG): the resumed run draws the same coins, logs the same
    rewards and ends with the same weights, and GRPO moved the policy towards the right answer."""
    from scripted_rollouts import WRONG, CoinRollouts, right_answer

    import lens_training.loop as loop

    data = ListDataset(world_batch_samples)
    args = [
        "max_steps=4",
        "ckpt_every=2",
        "batch_size=1",
        "group_size=2",
        "max_new_tokens=6",
        "lr=1e-3",
        "progress=false",
        "tensorboard=false",
        "device=cpu",
        "cot=true",
    ]
    policy = copy.deepcopy(tiny_lens)
    full = train_stage2(
        load_config(Stage2Config, None, [f"out_dir={tmp_path / 'full'}", *args]),
        dataset=data,
        model=policy,
        engine=CoinRollouts(tiny_lens, world_batch_samples),
    )
    stds = [h["stage2/reward_std"] for h in full.history]
    assert max(stds) > 0.5, f"every group had equal rewards ({stds}): the policy term saw nothing"

    real_save = loop.save_checkpoint

    def save_then_die(directory, step, *a, **kw):
        real_save(directory, step, *a, **kw)
        torch.manual_seed(777)  # whatever the dead process's RNG did afterwards must not matter
        raise _Killed

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    cfg = load_config(Stage2Config, None, [f"out_dir={tmp_path / 'cut'}", *args])
    with pytest.raises(_Killed):
        train_stage2(
            cfg, dataset=data, model=copy.deepcopy(tiny_lens), engine=CoinRollouts(tiny_lens, world_batch_samples)
        )
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train_stage2(
        cfg, dataset=data, model=copy.deepcopy(tiny_lens), engine=CoinRollouts(tiny_lens, world_batch_samples)
    )
    assert len(resumed.history) == 2
    for key in ("stage2/reward_total", "stage2/reward_std", "stage2/completion_length", "stage2/loss"):
        assert [h[key] for h in resumed.history] == [h[key] for h in full.history[2:]], key
    _assert_same_weights(full.final_dir, resumed.final_dir)

    # the policy gradient raised the right answer's likelihood against the wrong one's (about +0.55 per
    # token; the segmentation loss alone, flowing through the queries, moves it less than 0.1)
    def preference(model):
        return [
            _mean_logprob(model, s, right_answer(tiny_lens, s)) - _mean_logprob(model, s, WRONG)
            for s in world_batch_samples
        ]

    before, after = preference(tiny_lens), preference(policy)
    gains = [a - b for a, b in zip(after, before, strict=True)]
    assert min(gains) > 0.25, f"right-minus-wrong log-prob per token: before {before}, after {after}"
