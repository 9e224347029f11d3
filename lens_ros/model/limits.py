"""Input limits, one definition each: the pipeline enforces them, the node's parameters may
only lower them (no torch, no ROS: imported by both)."""

MAX_INSTRUCTION_CHARS = 1000
MAX_IMAGE_PIXELS = 8192 * 8192
MIN_IMAGE_SIDE = 8
# Answers longer than this are cut before parsing: bounds regex work on hostile text.
MAX_ANSWER_CHARS = 16384
