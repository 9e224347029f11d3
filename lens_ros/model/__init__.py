"""The LENS model, ROS-free: MLLM wrapper, context module, segmenters and the Pipeline.

Nothing under ``lens_ros.model`` imports rclpy; scripts, tests, training and the
benchmarks use it directly, and the ROS node is a thin adapter around ``Pipeline``.
"""
