"""Training pipeline of lens_ros: data sets, stage 1 alignment, stage 2 GRPO, evaluation, export.

Nothing here imports rclpy; the model classes come from ``lens_ros.model``.
"""
