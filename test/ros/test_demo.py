"""lens-demo end to end (tiny random model): it writes overlays and a report and says where."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_writes_overlays_and_report(ros_env, tmp_path, tiny_bundle):
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lens_ros.demo",
            "--out",
            str(out),
            "--model",
            str(tiny_bundle),
            "--instructions",
            "2",
            "--settle",
            "1",
            "--width",
            "160",
            "--height",
            "120",
        ],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(out / "report.md") in result.stdout, "the demo prints where the report is"
    report = json.loads((out / "report.json").read_text())
    assert len(report["answers"]) == 2
    for answer in report["answers"]:
        assert answer["status"] in ("ok", "parse_fallback", "no_object"), answer
        assert answer["total_ms"] > 0 and answer["mask_iou"] is not None
        assert (out / answer["overlay_png"]).is_file()
    assert "| simple |" in (out / "report.md").read_text()
