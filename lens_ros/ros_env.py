"""Process environment for everything lens_ros starts (nodes, demo, tests, entry points).

Fast DDS's default transports silently drop best-effort messages larger than about
512 KB, i.e. every camera frame. The shipped profile (config/fastdds_profile.xml)
adds a 16 MB shared-memory transport and a loopback UDP transport with 4 MB
messages. This module is the one place that points Fast DDS at it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_profile.xml"


def venv_ament_prefix() -> str | None:
    """The interpreter's prefix when it holds an ament index (ROS 2 from PyPI wheels)."""
    return sys.prefix if (Path(sys.prefix) / "share" / "ament_index").is_dir() else None


def source_tree() -> Path | None:
    """The checkout this module was imported from, if it was imported from one."""
    top = Path(__file__).resolve().parent.parent
    return top if (top / "package.xml").is_file() and (top / "config").is_dir() else None


def config_dir() -> Path:
    """The directory holding lens_ros's parameter files, profiles and RViz config.

    Code imported from a source checkout (development venv, tests) uses the
    checkout's config/, so edits take effect without re-installing; an installed
    package (colcon, or a venv prefix) finds share/lens_ros through the ament index.
    """
    tree = source_tree()
    if tree is not None:
        return tree / "config"
    if not os.environ.get("AMENT_PREFIX_PATH") and venv_ament_prefix():
        os.environ["AMENT_PREFIX_PATH"] = venv_ament_prefix()
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("lens_ros")) / "config"


def fastdds_profile_path() -> Path:
    return config_dir() / PROFILE_NAME


def configure_dds(environ: dict[str, str] | None = None) -> str:
    """Point Fast DDS at the shipped profile unless the user already chose one.

    Must run before rclpy creates its first context (Fast DDS reads the variable
    once per process). Returns the profile path in effect. Pass a dict (e.g. a
    copy of ``os.environ`` for a child process) to configure that instead.
    """
    env = os.environ if environ is None else environ
    if not env.get(PROFILE_ENV):
        env[PROFILE_ENV] = str(fastdds_profile_path())
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not env.get("AMENT_PREFIX_PATH") and venv_ament_prefix():
        env["AMENT_PREFIX_PATH"] = venv_ament_prefix()
    return env[PROFILE_ENV]
