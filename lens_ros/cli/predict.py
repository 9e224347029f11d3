"""lens-predict: run the Pipeline on one image file and write overlay.png, mask.png, result.json.

    lens-predict --model lens-tiny --image frame.png --instruction "the red mug" --out out/

Exit status: 0 done (also when the mask is empty), 2 bad input, 3 missing/corrupt model files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lens_ros.model.types import BadInputError, ModelFileError, SegmentationResult


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB; raises BadInputError when unreadable."""
    import cv2

    if not path.is_file():
        raise BadInputError(f"{path}: image file not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadInputError(f"{path}: not a readable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def overlay(rgb: np.ndarray, result: SegmentationResult) -> np.ndarray:
    """The frame with mask, box and label drawn (the node's drawing when importable)."""
    mask = result.masks[0] if result.masks.shape[0] else None
    box = result.boxes[0] if result.boxes.shape[0] else result.parsed_box
    label = result.labels[0] if result.labels else ""
    score = float(result.scores[0]) if result.scores.shape[0] else None
    status = "empty" if result.empty else ""
    try:
        from lens_ros.visualization import draw_overlay
    except ImportError:  # ROS message packages absent: plain OpenCV drawing
        import cv2

        out = rgb.copy()
        if mask is not None:
            out[mask] = (out[mask] * 0.5 + np.array([0, 200, 255]) * 0.5).astype(np.uint8)
        if box is not None:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), (255, 220, 0), 2)
        return out
    return draw_overlay(rgb, mask=mask, box=box, label=label, score=score, status=status)


def result_json(result: SegmentationResult, args: argparse.Namespace, image: np.ndarray) -> dict:
    timings = asdict(result.timings)
    timings["reasoning_ms"] = result.timings.reasoning_ms
    timings["segmentation_ms"] = result.timings.segmentation_ms
    return {
        "model": str(args.model),
        "image": str(args.image),
        "image_size": {"height": int(image.shape[0]), "width": int(image.shape[1])},
        "instruction": args.instruction,
        "objects": [
            {"label": label, "score": float(score), "box_xyxy": [float(v) for v in box], "mask_pixels": int(mask.sum())}
            for label, score, box, mask in zip(result.labels, result.scores, result.boxes, result.masks, strict=True)
        ],
        "empty": bool(result.empty),
        "rationale": result.rationale,
        "answer": result.answer,
        "parsed_box_xyxy": None if result.parsed_box is None else [float(v) for v in result.parsed_box],
        "parse_error": result.parse_error,
        "timings_ms": timings,
        "device": str(args.device),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lens-predict", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lens-tiny", help="preset name, bundle directory or LENS release directory")
    p.add_argument("--model-dir", default=None, help="files of a 3B preset (see config/models/*.yaml)")
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--instruction", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    p.add_argument("--segmenter-backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--cot", action="store_true", default=None, help="ask the CoT question")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--box-prompt", action="store_true", help="also prompt the segmenter with the parsed box")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import cv2

    from lens_ros.model.pipeline import Pipeline, PipelineConfig

    try:
        image = read_rgb(args.image)
        config = PipelineConfig(max_new_tokens=args.max_new_tokens, cot=args.cot, use_box_prompt=args.box_prompt)
        pipe = Pipeline.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            segmenter_backend=args.segmenter_backend,
            model_dir=args.model_dir,
            config=config,
        )
        result, _ = pipe.segment(image, args.instruction)
        args.device = f"{pipe.device} ({str(pipe.dtype).removeprefix('torch.')})"
    except BadInputError as exc:
        print(f"lens-predict: bad input: {exc}", file=sys.stderr)
        return 2
    except ModelFileError as exc:
        print(f"lens-predict: model files: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # e.g. a CUDA device asked for where there is none
        print(f"lens-predict: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    mask = result.masks[0] if result.masks.shape[0] else np.zeros(image.shape[:2], bool)
    cv2.imwrite(str(args.out / "mask.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(args.out / "overlay.png"), overlay(image, result)[:, :, ::-1])
    (args.out / "result.json").write_text(json.dumps(result_json(result, args, image), indent=2))
    summary = "empty mask" if result.empty else f"box {np.round(result.boxes[0], 1).tolist()}"
    print(f"{summary}; {result.timings.total_ms:.0f} ms; wrote {args.out}/overlay.png, mask.png, result.json")
    if result.parse_error:
        print(f"note: {result.parse_error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
