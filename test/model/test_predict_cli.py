"""lens-predict end to end on a tiny bundle."""

from __future__ import annotations

import json

import cv2
import numpy as np

from lens_ros.cli.predict import main


def test_cli_writes_overlay_mask_and_result(tiny_bundle, scene, tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), scene[:, :, ::-1])
    out = tmp_path / "out"
    rc = main(
        [
            "--model",
            str(tiny_bundle),
            "--image",
            str(image),
            "--instruction",
            "the red block",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-new-tokens",
            "6",
        ]
    )
    assert rc == 0
    overlay = cv2.imread(str(out / "overlay.png"))
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert overlay.shape == scene.shape and mask.shape == scene.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    data = json.loads((out / "result.json").read_text())
    assert data["instruction"] == "the red block"
    assert data["image_size"] == {"height": 60, "width": 80}
    assert {"answer", "rationale", "objects", "timings_ms", "parse_error"} <= data.keys()
    assert data["timings_ms"]["total_ms"] > 0


def test_cli_bad_image_exit_code(tiny_bundle, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    rc = main(
        [
            "--model",
            str(tiny_bundle),
            "--image",
            str(tmp_path / "bad.png"),
            "--instruction",
            "x",
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "bad input" in capsys.readouterr().err


def test_cli_missing_model_exit_code(tmp_path, scene, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), scene)
    rc = main(
        [
            "--model",
            str(tmp_path / "none"),
            "--image",
            str(image),
            "--instruction",
            "x",
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 3 and "model files" in capsys.readouterr().err
