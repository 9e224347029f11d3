"""Sizes of LENS-tiny: one place for the numbers of the tiny MLLM, the tiny SAM and the
images they see. Chosen from the measured recipe in the project notes (2-core CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from lens_ros.model.sam_backend import SamConfig

# The world renders 640x480 frames; the MLLM sees them resized by smart_resize with this
# pixel budget (factor patch*merge = 16): any 4:3 frame -> 160x128 -> 20x16 patches ->
# 80 image tokens (160*128 exactly would floor 480 px to 112 rows).
MLLM_PATCH = 8
MLLM_MERGE = 2
MLLM_MAX_PIXELS = 22_000
MLLM_MIN_PIXELS = 16 * 16
MLLM_IMAGE_HW = (128, 160)  # (h, w) for 4:3 frames
MLLM_FRAME_SIZE = (320, 240)  # (W, H) the MLLM pre-training renders (then resized like at inference)
NUM_MAX = 320  # numbers 0..NUM_MAX are single tokens (box coordinates)

# The segmenter sees the frame with its longest side at 320 px (640x480 -> 320x240);
# patch 16 gives a 20x20 embedding and 80x80 low-res masks (patch 8 measured 8x slower).
TINY_SAM = SamConfig(
    image_size=320,
    encoder_embed_dim=96,
    encoder_depth=3,
    encoder_num_heads=4,
    global_attn_indexes=(2,),
    prompt_embed_dim=128,
    patch_size=16,
    window_size=10,
    decoder_depth=2,
    decoder_mlp_dim=512,
    decoder_num_heads=4,
    iou_head_hidden_dim=128,
    mask_in_chans=16,
)
SAM_FRAME_SIZE = (320, 240)  # (W, H) the SAM pre-training renders directly


@dataclass
class TinyMLLMConfig:
    """Numbers of the tiny Qwen2.5-VL (see ``lens_training.tiny.model.build_tiny_qwen``)."""

    vision_depth: int = 2
    vision_hidden: int = 128
    vision_heads: int = 4
    vision_intermediate: int = 512
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 768
    max_position_embeddings: int = 1024
