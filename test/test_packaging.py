"""The installed commands work from any directory and import this project's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_training_is_this_projects_package_from_any_directory(tmp_path):
    # The sam2 wheel installs an unrelated top-level package named `training`; ours is
    # imported as `lens_training` (its folder is training/), whatever is imported first.
    out = subprocess.run(
        [sys.executable, "-c", "import lens_training; print(lens_training.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == ROOT / "training" / "__init__.py"


@pytest.mark.parametrize("command", ["lens-train", "lens-eval", "lens-predict", "lens-launch"])
def test_console_commands_start_from_any_directory(tmp_path, command):
    path = shutil.which(command, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{command} is installed by `make setup` (pip install -e .)")
    out = subprocess.run([path, "--help"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


def test_generated_interfaces_and_sources_form_one_package(tmp_path):
    code = "import lens_ros.msg, lens_ros.image_conversion as c; print(lens_ros.msg.Segmentation.__name__, c.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    name, source = out.stdout.split()
    assert name == "Segmentation" and Path(source).resolve() == ROOT / "lens_ros" / "image_conversion.py"
