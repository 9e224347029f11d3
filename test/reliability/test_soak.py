"""The CI-length soak: sim camera at 30 Hz, a new instruction every 5 s, for one minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ROOT / "lens_ros" / "weights" / "lens-tiny" / "config.json"

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.mark.skipif(not EMBEDDED.is_file(), reason="the embedded lens-tiny weights are not in this checkout")
def test_one_minute_soak_keeps_memory_flat_and_counts_every_frame(ros_env, tmp_path):
    summary_path = tmp_path / "soak.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--minutes",
            "1",
            "--json",
            str(summary_path),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert summary_path.is_file(), out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["outputs"] > 60, f"too few answers in a minute: {summary['outputs']}"
    assert summary["drops_accounted"], (
        f"frames unaccounted for: received {summary['node_frames_received']}, "
        f"published {summary['node_published']}, dropped {summary['node_frame_drops']}"
    )
    assert summary["rss_growth"] is not None and summary["rss_growth"] < 0.05, f"RSS grew {summary['rss_growth']:.1%}"
    assert not summary["errors"], summary["errors"]
    assert out.returncode == 0, out.stderr[-3000:]
