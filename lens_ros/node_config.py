"""Every parameter of the lens_ros node, in one place.

``NodeConfig`` is a plain dataclass (usable without ROS: tests, the launch CLI, the
demo); ``declare_parameters`` maps it onto ROS parameters with descriptors, and
``NodeConfig.from_params_file`` reads the ROS params-file YAML (config/lens_node.yaml).
Fields marked ``runtime`` may be changed with ``ros2 param set`` while the node runs;
the others are read once at start-up (they need a model reload or new subscriptions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lens_ros.model.limits import MAX_IMAGE_PIXELS, MAX_INSTRUCTION_CHARS
from lens_ros.model.types import ConfigError, short_repr

NODE_NAME = "lens_node"


def _param(default: Any, description: str, *, runtime: bool = False, choices=None, low=None, high=None):
    meta = {"description": description, "runtime": runtime, "choices": choices, "low": low, "high": high}
    return field(default=default, metadata=meta)


@dataclass
class NodeConfig:
    # Model
    model: str = _param("lens-tiny", "Preset name (lens-tiny, lens-3b-sam2-l, lens-3b-sam-h) or model bundle directory")
    model_dir: str = _param("", "Directory holding the preset's weights (empty: the preset's default location)")
    device: str = _param("auto", "Torch device: auto (cuda if available), cpu, cuda, cuda:N")
    dtype: str = _param("auto", "Weights dtype", choices=("auto", "float32", "bfloat16", "float16"))
    segmenter_backend: str = _param("torch", "Segmenter runtime", choices=("torch", "onnx"))
    switch_interval_s: float = _param(
        0.0002,
        "Python thread switch interval of the node process (sys.setswitchinterval; 0: Python's 5 ms). The "
        "model's worker and the executor's callback threads share the interpreter: short turns stop a camera "
        "callback from holding the model up",
        low=0.0,
        high=0.1,
    )
    cpu_threads: int = _param(
        0,
        "Torch intra-op threads for CPU inference (0: one per core less one, which the ROS executor receiving "
        "camera frames needs; at least 1)",
        low=0,
        high=256,
    )
    draft_tokens: int = _param(
        6,
        "Speculative decoding: tokens drafted per decoder step from n-grams of the prompt and of earlier answers, "
        "checked in one step (the greedy answer is unchanged; 0: one token per step)",
        runtime=True,
        low=0,
        high=64,
    )
    # Decisions
    mask_threshold: float = _param(
        0.0, "Mask logit threshold (0: the segmenter's own decision)", runtime=True, low=-100.0, high=100.0
    )
    use_box_prompt: bool = _param(False, "Also prompt the segmenter with the MLLM's parsed box", runtime=True)
    track_with_previous_box: bool = _param(
        True, "While tracking, prompt the segmenter with the previous mask's box too", runtime=True
    )
    min_score: float = _param(
        0.0, "Objects whose mask score is below this are reported as no object", runtime=True, low=0.0, high=1.0
    )
    reason_interval_s: float = _param(
        0.0,
        "Re-run the full reasoning this often while tracking (0: only on a new instruction)",
        runtime=True,
        low=0.0,
        high=3600.0,
    )
    track: bool = _param(
        True,
        "Segment every new frame with the cached prompts (false: only answer instructions and service calls)",
        runtime=True,
    )
    max_instruction_length: int = _param(
        MAX_INSTRUCTION_CHARS,
        "Instructions longer than this many characters are rejected",
        runtime=True,
        low=1,
        high=MAX_INSTRUCTION_CHARS,
    )
    # Outputs
    publish_mask: bool = _param(True, "Publish ~/mask (mono8)", runtime=True)
    publish_overlay: bool = _param(
        True,
        "Publish ~/overlay (rgb8 drawing for RViz) and ~/overlay/compressed (JPEG); each is drawn and sent only "
        "while something subscribes to it",
        runtime=True,
    )
    overlay_compressed_max_hz: float = _param(
        10.0, "~/overlay/compressed: at most this many JPEG frames a second", runtime=True, low=0.1, high=1000.0
    )
    overlay_jpeg_quality: int = _param(80, "JPEG quality of ~/overlay/compressed", runtime=True, low=1, high=100)
    publish_rationale: bool = _param(True, "Publish ~/rationale when the model reasons", runtime=True)
    rationale_stream_period_s: float = _param(
        0.05,
        "While the model writes its rationale, publish it so far on ~/rationale_stream at most this often "
        "(0: no stream)",
        runtime=True,
        low=0.0,
        high=10.0,
    )
    publish_markers: bool = _param(True, "Publish ~/markers (MarkerArray) when a 3D pose is known", runtime=True)
    publish_pose: bool = _param(True, "Publish ~/target_pose when depth and camera_info are available", runtime=True)
    publish_cloud: bool = _param(True, "Publish ~/target_cloud (the object's points)", runtime=True)
    pose_position: str = _param(
        "surface",
        "Target position: surface (centroid of the visible points) or centre (moved back by half the object's depth)",
        runtime=True,
        choices=("surface", "centre"),
    )
    overlay_alpha: float = _param(0.5, "Mask opacity in ~/overlay", runtime=True, low=0.0, high=1.0)
    max_cloud_points: int = _param(
        20000, "Subsample ~/target_cloud to at most this many points", runtime=True, low=1, high=10_000_000
    )
    # Inputs
    use_compressed: bool = _param(False, "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image")
    use_depth: bool = _param(True, "Subscribe to depth and camera_info for 3D outputs")
    image_queue_size: int = _param(2, "QoS depth of the image subscriptions", low=1, high=100)
    depth_buffer_size: int = _param(30, "Recent depth/camera_info messages kept for time matching", low=1, high=1000)
    sync_slop_s: float = _param(
        0.02, "Largest stamp difference between an image and its depth/camera_info", runtime=True, low=0.0, high=10.0
    )
    sync_wait_s: float = _param(
        0.05, "How long the worker waits for a late depth frame of the same time", runtime=True, low=0.0, high=1.0
    )
    depth_scale: float = _param(0.001, "Metres per unit of 16UC1 depth images", runtime=True, low=0.0, high=10.0)
    min_depth_m: float = _param(0.05, "Depth readings below this are ignored", runtime=True, low=0.0, high=1000.0)
    max_depth_m: float = _param(10.0, "Depth readings above this are ignored", runtime=True, low=0.0, high=1000.0)
    max_image_pixels: int = _param(
        MAX_IMAGE_PIXELS, "Images with more pixels are rejected", runtime=True, low=1, high=MAX_IMAGE_PIXELS
    )
    # Diagnostics
    diagnostics_period_s: float = _param(1.0, "Period of /diagnostics", low=0.05, high=3600.0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NodeConfig:
        """A config from parameter values; unknown names raise with the known ones listed."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown lens_node parameters {unknown}; known: {sorted(known)}")
        coerced = {name: _coerce(known[name], value) for name, value in values.items()}
        return cls(**coerced)

    @classmethod
    def from_params_file(cls, path: str | Path, node_name: str = NODE_NAME) -> NodeConfig:
        """Read a ROS params file (``node: {ros__parameters: {...}}``, ``/**`` also matches)."""
        return cls.from_dict(read_params_file(path, node_name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = type(f.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"parameter {f.name!r} must be {kind.__name__}, got {short_repr(value)}")
    return value


def read_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters a ROS params file gives ``node_name`` (wildcard ``/**`` first, then the node).

    Raises ConfigError (naming the file) for unreadable files, invalid YAML or a layout
    that is not ``<node>: {ros__parameters: {...}}``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    # PyYAML's constructors also raise ValueError ("!!int 0x"), IndexError ("!!float"),
    # KeyError ("!!bool x"), AttributeError ("!!timestamp x") and RecursionError (deep nesting).
    except (OSError, ValueError, LookupError, AttributeError, RecursionError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read parameters: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a parameter file maps node names to {{ros__parameters: ...}}")
    values: dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name.lstrip("/")):
        section = data.get(key)
        if isinstance(section, dict):
            params = section.get("ros__parameters") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{path}: {key}.ros__parameters must be a mapping")
            values.update(params)
    return values


def parameter_descriptions() -> dict[str, str]:
    return {f.name: f.metadata["description"] for f in fields(NodeConfig)}


def runtime_parameters() -> set[str]:
    return {f.name for f in fields(NodeConfig) if f.metadata["runtime"]}


def check_value(name: str, value: Any) -> str:
    """'' when ``value`` is acceptable for parameter ``name``, else the reason it is not."""
    f = {f.name: f for f in fields(NodeConfig)}[name]
    try:
        value = _coerce(f, value)
    except ValueError as exc:
        return str(exc)
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        return f"{name} must be one of {list(meta['choices'])}, got {short_repr(value)}"
    if meta["low"] is not None and not (meta["low"] <= value <= meta["high"]):
        return f"{name} must be in [{meta['low']}, {meta['high']}], got {short_repr(value)}"
    return ""


def declare_parameters(node) -> NodeConfig:
    """Declare every NodeConfig field as a ROS parameter on ``node`` and read them back."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for f in fields(NodeConfig):
        meta = f.metadata
        descriptor = ParameterDescriptor(name=f.name, description=meta["description"], read_only=not meta["runtime"])
        if meta["choices"]:
            descriptor.additional_constraints = "one of: " + ", ".join(meta["choices"])
        if meta["low"] is not None and isinstance(f.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(meta["low"]), to_value=float(meta["high"]))
            ]
        elif meta["low"] is not None and isinstance(f.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(meta["low"]), to_value=int(meta["high"]), step=0)]
        node.declare_parameter(f.name, f.default, descriptor)
    values = {f.name: node.get_parameter(f.name).value for f in fields(NodeConfig)}
    config = NodeConfig.from_dict(values)
    for name, value in values.items():
        problem = check_value(name, value)
        if problem:
            raise ValueError(problem)
    return config
