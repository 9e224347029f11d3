"""Short coverage-guided fuzzing runs (atheris) of test/reliability/fuzz_targets.py.

Each target runs in its own process with a fixed seed, a bounded number of runs and a
per-input time limit; a longer campaign is the same command with ``-max_total_time``. The ``--self-check`` runs
plant a bug in each target and check that the harness reports it with a crash file.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (coverage-guided fuzzing) is installed by `make setup`")

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ROOT / "test" / "reliability" / "fuzz_targets.py"
# About 5 s of fuzzing each on a busy 2-core machine (the config target parses YAML: slower).
RUNS = {"parser": 50_000, "image": 60_000, "config": 4_000}
# One input taking longer than this is a failure too (the slowest seen take tens of ms;
# parse_answer's former trailing-whitespace regex took 5 s on 16000 spaces and a letter).
INPUT_TIMEOUT_S = 2


def needs(target: str) -> None:
    if target == "image":
        pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels are installed by `make setup`")


def fuzz(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run one target; libFuzzer's report (stderr) and atheris' Python traceback (stdout) end up in .stdout.

    libFuzzer reads the process's peak RSS, which a forked child inherits from this pytest
    process (models loaded by earlier tests): the fuzzed code's budget is 2 GiB on top of it.
    """
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return subprocess.run(
        [sys.executable, str(TARGETS), target, f"-rss_limit_mb={inherited_mb + 2048}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_finds_nothing(target, ros_env, tmp_path):
    needs(target)
    runs = RUNS[target]
    out = fuzz(
        target, ros_env, f"-runs={runs}", "-seed=1", f"-timeout={INPUT_TIMEOUT_S}", f"-artifact_prefix={tmp_path}/"
    )
    report = out.stdout[-6000:]
    assert out.returncode == 0, f"{target}: the fuzzer found an input that fails (crash file in {tmp_path}):\n{report}"
    assert f"Done {runs} runs" in out.stdout, report
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_harness_reports_a_planted_bug(target, ros_env, tmp_path):
    needs(target)
    out = fuzz(target, ros_env, "--self-check", "-runs=200000", "-seed=1", f"-artifact_prefix={tmp_path}/")
    report = out.stdout[-6000:]
    assert out.returncode != 0, f"{target}: the planted bug was not found:\n{report}"
    assert "Uncaught Python exception" in out.stdout and "FuzzInvariantError" in out.stdout, report
    crashes = list(tmp_path.glob("crash-*"))
    assert len(crashes) == 1, report
    # The input is only bad for the planted bug: the real code passes it.
    rerun = fuzz(target, ros_env, str(crashes[0]))
    assert rerun.returncode == 0, rerun.stdout[-6000:]
