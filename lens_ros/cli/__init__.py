"""Command-line tools of lens_ros that need no ROS (lens-predict)."""
