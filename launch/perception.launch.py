"""ros2 launch lens_ros perception.launch.py [preset:=...] [image:=...] [use_sim_camera:=true] ...

The nodes, parameter files, remappings and launch arguments come from
lens_ros.launch_description, which `lens-launch` (the venv equivalent) reads too.
Outputs are published in the camera's frame (no tf2 lookups). A requested tool that is
not installed (rviz2) is left out with a warning when the description is built, and
when lens_node exits (e.g. its model cannot be loaded) the whole launch shuts down, as
`lens-launch` does.
"""

import os

import launch.logging
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from lens_ros.launch_description import LAUNCH_ARGUMENTS, LENS_NODE, launch_plan
from lens_ros.ros_env import PROFILE_ENV, configure_dds


def _start_nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    plan = launch_plan(values)
    logger = launch.logging.get_logger("perception.launch.py")
    for warning in plan.warnings:
        logger.warning(warning)
    # Camera frames need the shipped Fast DDS profile in every process, RViz included.
    actions = []
    if not os.environ.get(PROFILE_ENV):
        actions.append(SetEnvironmentVariable(PROFILE_ENV, configure_dds({})))
    for spec in plan.specs:
        actions.append(
            Node(
                package=spec.package or None,  # None: an executable outside the ament index, by its path
                executable=spec.executable,
                name=spec.name,
                output="screen",
                parameters=[*spec.parameter_files, dict(spec.parameters)]
                if spec.parameters
                else list(spec.parameter_files),
                remappings=list(spec.remappings),
                arguments=list(spec.arguments),
                ros_arguments=["--log-level", spec.log_level],
                on_exit=[Shutdown(reason=f"{LENS_NODE} exited")] if spec.name == LENS_NODE else None,
            )
        )
    return actions


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_start_nodes)])
