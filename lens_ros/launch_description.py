"""The one description of what `perception.launch.py` and `lens-launch` start.

Node names, executables, parameter files, parameter overrides, remappings and the
launch arguments with their defaults live here only. ``launch/perception.launch.py``
turns ``node_specs`` into launch_ros ``Node`` actions; ``lens_ros.launch_cli`` turns
the same specs into ``--ros-args`` command lines for a venv without launch_ros.
No ROS imports (the ament index is read only when RViz is asked for): both sides
(and the tests) can read it anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lens_ros.ros_env import config_dir

PACKAGE = "lens_ros"
LENS_NODE = "lens_node"
SIM_CAMERA = "sim_camera"
RVIZ = "rviz2"
CONSOLE = "lens_console"
NODE_PARAMS_FILE = "lens_node.yaml"
RVIZ_CONFIG = "lens.rviz"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "preset",
        "",
        "Model preset (lens-tiny, lens-3b-sam2-l, lens-3b-sam-h) or bundle directory; empty: params_file's model",
    ),
    LaunchArgument("model_dir", "", "Local directory with the preset's weights; empty: params_file's model_dir"),
    LaunchArgument("device", "", "Torch device (auto, cpu, cuda, cuda:N); empty: params_file's device"),
    LaunchArgument("params_file", "", "lens_node parameter file; empty: the package's config/lens_node.yaml"),
    LaunchArgument(
        "image", "/camera/image_raw", "Colour image topic (sensor_msgs/Image; <image>/compressed with use_compressed)"
    ),
    LaunchArgument("depth", "/camera/depth/image_raw", "Depth image aligned to the colour image (16UC1 mm or 32FC1 m)"),
    LaunchArgument("camera_info", "/camera/camera_info", "CameraInfo of the colour image"),
    LaunchArgument("instruction", "/instruction", "std_msgs/String instruction topic"),
    LaunchArgument("use_compressed", "false", "Subscribe to <image>/compressed (CompressedImage) instead of <image>"),
    LaunchArgument(
        "use_sim_camera", "false", "Also start the synthetic RGB-D camera, publishing on image/depth/camera_info"
    ),
    LaunchArgument("use_rviz", "false", "Also start RViz with config/lens.rviz"),
    LaunchArgument(
        "lifecycle", "false", "Run lens_node as a managed lifecycle node (configure + activate it to load the model)"
    ),
    LaunchArgument("log_level", "info", "Log level of the started nodes"),
    LaunchArgument("console", "false", "Also start the operator console (lens-console), a web page on console_host"),
    LaunchArgument(
        "console_host", "127.0.0.1", "Address the console listens on (not loopback: needs LENS_CONSOLE_TOKEN)"
    ),
    LaunchArgument("console_port", "8080", "TCP port of the console"),
)

ARGUMENT_NAMES = tuple(a.name for a in LAUNCH_ARGUMENTS)


@dataclass(frozen=True)
class NodeSpec:
    """One process: what launch_ros's Node() needs, plus the Python module for the venv."""

    name: str
    executable: str
    package: str = PACKAGE
    module: str = ""  # python -m <module> runs it without an installed lib/lens_ros/
    parameter_files: tuple[str, ...] = ()
    parameters: Mapping[str, object] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    log_level: str = "info"


@dataclass(frozen=True)
class LaunchPlan:
    """What to start for one set of launch arguments, and what was left out and why."""

    specs: list[NodeSpec]
    warnings: list[str] = field(default_factory=list)


def ament_executable(package: str, executable: str) -> str | None:
    """lib/<package>/<executable> of a package in the ament index (where launch_ros's
    Node(package=..., executable=...) looks), or None."""
    try:
        from ament_index_python.packages import get_package_prefix

        candidate = Path(get_package_prefix(package)) / "lib" / package / executable
    except (ImportError, LookupError, OSError):  # no ament index, or the package is not in it
        return None
    return str(candidate) if os.access(candidate, os.X_OK) else None


def resolve_arguments(values: Mapping[str, str] | None = None) -> dict[str, str]:
    """Defaults overlaid with ``values``; an unknown name raises with the known ones."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(ARGUMENT_NAMES))
    if unknown:
        raise ValueError(f"unknown launch arguments {unknown}; known: {list(ARGUMENT_NAMES)}")
    resolved = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    resolved.update({k: str(v) for k, v in values.items()})
    return resolved


def as_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def node_specs(values: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """The processes to start for these launch argument values (strings, as launch gives them)."""
    return launch_plan(values).specs


def launch_plan(values: Mapping[str, str] | None = None) -> LaunchPlan:
    """``node_specs`` plus a warning for each requested process that cannot start here.

    Optional tools that are not installed (rviz2) are left out when the description is
    built, so nothing is started that would have to be torn down again.
    """
    args = resolve_arguments(values)
    warnings: list[str] = []
    share = config_dir()
    params_file = args["params_file"] or str(share / NODE_PARAMS_FILE)
    overrides: dict[str, object] = {}
    if args["preset"]:
        overrides["model"] = args["preset"]
    if args["model_dir"]:
        overrides["model_dir"] = args["model_dir"]
    if args["device"]:
        overrides["device"] = args["device"]
    use_compressed = as_bool(args["use_compressed"])
    overrides["use_compressed"] = use_compressed
    topics = (
        ("image", args["image"]),
        ("image/compressed", args["image"].rstrip("/") + "/compressed"),
        ("depth", args["depth"]),
        ("camera_info", args["camera_info"]),
        ("/instruction", args["instruction"]),
    )
    specs = [
        NodeSpec(
            name=LENS_NODE,
            executable="lens_node",
            module="lens_ros.node",
            parameter_files=(params_file,),
            parameters=overrides,
            remappings=tuple((src, dst) for src, dst in topics if src != dst),
            arguments=("--lifecycle",) if as_bool(args["lifecycle"]) else (),
            log_level=args["log_level"],
        )
    ]
    if as_bool(args["use_sim_camera"]):
        camera_topics = (
            ("camera/image_raw", args["image"]),
            ("camera/image_raw/compressed", args["image"].rstrip("/") + "/compressed"),
            ("camera/depth/image_raw", args["depth"]),
            ("camera/camera_info", args["camera_info"]),
        )
        specs.append(
            NodeSpec(
                name=SIM_CAMERA,
                executable="sim_camera",
                module="lens_ros.sim_camera",
                parameters={"publish_compressed": use_compressed},
                remappings=camera_topics,
                log_level=args["log_level"],
            )
        )
    if as_bool(args["use_rviz"]):
        rviz = rviz_spec(str(share / RVIZ_CONFIG), args["log_level"])
        if rviz is None:
            warnings.append(
                f"use_rviz:=true but {RVIZ} is not installed (no package {RVIZ!r} in the ament index, "
                f"none on PATH): RViz is not started; the node's topics are published all the same"
            )
        else:
            specs.append(rviz)
    if as_bool(args["console"]):
        specs.append(
            NodeSpec(
                name=CONSOLE,
                executable="lens_console",
                module="lens_ros.console.server",
                parameters={"host": args["console_host"], "port": int(args["console_port"]), "lens_node": LENS_NODE},
                remappings=(("/instruction", args["instruction"]),) if args["instruction"] != "/instruction" else (),
                log_level=args["log_level"],
            )
        )
    return LaunchPlan(specs, warnings)


def rviz_spec(config: str, log_level: str) -> NodeSpec | None:
    """RViz with ``config``: package rviz2 from the ament index, else an rviz2 on PATH, else None."""
    if ament_executable(RVIZ, RVIZ):
        package, executable = RVIZ, RVIZ
    else:  # launch_ros runs an executable outside the ament index by its path, with no package
        package, executable = "", shutil.which(RVIZ)
        if executable is None:
            return None
    return NodeSpec(name="rviz", executable=executable, package=package, arguments=("-d", config), log_level=log_level)


def parameter_value(value: object) -> str:
    """A parameter value as ``-p name:=<value>`` text (YAML, which rcl parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a quoted YAML string stays a string ("1.0", "", "true")


def ros_arguments(spec: NodeSpec) -> list[str]:
    """``--ros-args`` for one spec, the same settings launch_ros passes."""
    out = ["--ros-args", "-r", f"__node:={spec.name}"]
    for path in spec.parameter_files:
        out += ["--params-file", str(Path(path))]
    for name, value in spec.parameters.items():
        out += ["-p", f"{name}:={parameter_value(value)}"]
    for src, dst in spec.remappings:
        out += ["-r", f"{src}:={dst}"]
    out += ["--log-level", spec.log_level]
    return out
