"""torchrun with 2 CPU processes (gloo) makes the same update as 1 process with the doubled batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lens_training.config import Stage1Config, load_config
from lens_training.stage1 import train_stage1

ROOT = Path(__file__).resolve().parents[2]
COMMON = [
    "data=synthetic:train:16:64x48",
    "lr=3e-3",
    "warmup_steps=0",
    "progress=false",
    "tensorboard=false",
    "num_threads=1",
    "device=cpu",
    "seed=0",
]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path, tiny_lens):
    initial = {f"model.{k}": v.clone() for k, v in tiny_lens.state_dict().items()}
    single = train_stage1(
        load_config(
            Stage1Config, None, [f"out_dir={tmp_path / 'one'}", "batch_size=4", *COMMON, "max_steps=2", "ckpt_every=0"]
        ),
        model=tiny_lens,
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lens_training.cli",
        "stage1",
        f"out_dir={tmp_path / 'two'}",
        "batch_size=2",
        *COMMON,
        "max_steps=2",
        "ckpt_every=0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    one = load_file(str(single.final_dir / "trainable.safetensors"))
    two = load_file(str(tmp_path / "two/final/trainable.safetensors"))
    assert one.keys() == two.keys()
    moved = [k for k in one if not torch.equal(one[k], initial[k])]
    assert moved, "the runs did not train"
    # same data, same update; only the order of float reductions differs (gloo all-reduce
    # vs one batch), which Adam's g / sqrt(v) turns into ~1e-6 differences in the weights
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_and_resume(tmp_path, tiny_lens):
    initial = {f"model.{k}": v.clone() for k, v in tiny_lens.state_dict().items()}
    args = [*COMMON, "max_steps=3", "ckpt_every=1"]
    single = train_stage1(
        load_config(Stage1Config, None, [f"out_dir={tmp_path / 'one'}", "batch_size=4", *args]), model=tiny_lens
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lens_training.cli",
        "stage1",
        f"out_dir={tmp_path / 'fsdp'}",
        "batch_size=2",
        "distributed=fsdp",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    one = load_file(str(single.final_dir / "trainable.safetensors"))

    def check():
        sharded = load_file(str(tmp_path / "fsdp/final/trainable.safetensors"))
        assert sharded.keys() == one.keys()
        assert any(not torch.equal(one[k], initial[k]) for k in one)
        for key in one:
            torch.testing.assert_close(
                sharded[key], one[key], rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}"
            )
        bundle = load_file(str(tmp_path / "fsdp/final/model.safetensors"))  # the exported bundle has them too
        for key in one:
            torch.testing.assert_close(bundle[key.removeprefix("model.")], sharded[key])

    check()
    # the sharded checkpoint of step 2 resumes to the same end point
    import shutil

    shutil.rmtree(tmp_path / "fsdp/final")
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from" in run.stdout
    check()
