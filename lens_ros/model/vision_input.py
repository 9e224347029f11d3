"""Image -> Qwen2.5-VL vision-tower input, without a transformers processor.

``pack_image`` produces the same ``pixel_values`` / ``image_grid_thw`` that
transformers' ``Qwen2VLImageProcessor`` produces for one RGB image (CLIP mean/std,
rescale 1/255, the vision tower's merge-block patch order), so the real 3B model and the
embedded tiny model share one code path. The tiny model additionally gets two coordinate
channels (normalised x, y of each pixel centre in [-1, 1]) because its vision tower has
no absolute positions at all (rotary only) and must learn where things are from scratch.

Patch layout (``P`` = patch_size, ``M`` = merge_size, ``T`` = temporal_patch_size,
``C`` = 3 or 5 channels): rows are ordered (t, h_block, w_block, h_in_block, w_in_block)
with ``h = h_block*M + h_in_block``; each row is the flattened (C, T, P, P) patch, the
still image repeated T times along the temporal axis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from lens_ros.model.types import BadInputError

# OpenAI CLIP statistics, which Qwen2-VL / Qwen2.5-VL's image processor uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Qwen2.5-VL processor defaults, and the LENS setting of max_pixels.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280
LENS_MAX_PIXELS = 1_000_000
MAX_ASPECT_RATIO = 200


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's resize rule: (h, w) divisible by ``factor``, area in [min, max] pixels,
    aspect ratio kept as closely as possible.

    ``factor`` is patch_size * merge_size (28 for Qwen2.5-VL). Raises ``BadInputError``
    for empty images and aspect ratios above 200.
    """
    if height <= 0 or width <= 0:
        raise BadInputError(f"image has no pixels ({height}x{width})")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise BadInputError(f"aspect ratio of a {height}x{width} image exceeds {MAX_ASPECT_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of an HxWx3 uint8 image (PIL, as the Qwen processor and LENS do)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    pil = Image.fromarray(image).resize((width, height), resample=Image.Resampling.BICUBIC)
    return np.asarray(pil)


def coordinate_channels(height: int, width: int) -> np.ndarray:
    """(2, H, W) float32: x then y of each pixel centre, normalised to [-1, 1]."""
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0
    grid_x = np.broadcast_to(xs[None, :], (height, width))
    grid_y = np.broadcast_to(ys[:, None], (height, width))
    return np.stack([grid_x, grid_y], axis=0)


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Validate an HxWx3 uint8 array; raises ``BadInputError`` saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"image must be HxWx3 RGB, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise BadInputError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise BadInputError(f"image has no pixels (shape {tuple(image.shape)})")
    return np.ascontiguousarray(image)


def patchify(
    channels: np.ndarray, *, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(C, H, W) float -> ((grid_h*grid_w, C*T*P*P), (1, grid_h, grid_w)) in merge order."""
    c, h, w = channels.shape
    factor = patch_size * merge_size
    if h % factor or w % factor:
        raise ValueError(f"{h}x{w} is not divisible by patch_size*merge_size={factor}")
    grid_h, grid_w = h // patch_size, w // patch_size
    frames = np.broadcast_to(channels[None], (temporal_patch_size, c, h, w))
    x = frames.reshape(
        1,
        temporal_patch_size,
        c,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> (t, hb, wb, hm, wm, C, T, P, P)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = np.ascontiguousarray(x).reshape(grid_h * grid_w, c * temporal_patch_size * patch_size**2)
    return flat, (1, grid_h, grid_w)


def unpatchify(
    pixel_values: np.ndarray,
    grid_thw: tuple[int, int, int],
    *,
    channels: int,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
) -> np.ndarray:
    """Inverse of ``patchify`` for one image: -> (C, H, W) (first temporal frame)."""
    _, grid_h, grid_w = grid_thw
    x = pixel_values.reshape(
        1,
        grid_h // merge_size,
        grid_w // merge_size,
        merge_size,
        merge_size,
        channels,
        temporal_patch_size,
        patch_size,
        patch_size,
    )
    # back to (t, T, C, hb, hm, P, wb, wm, P)
    x = x.transpose(0, 6, 5, 1, 3, 7, 2, 4, 8)
    return x.reshape(temporal_patch_size, channels, grid_h * patch_size, grid_w * patch_size)[0]


def pack_image(
    image: np.ndarray,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    coord_channels: bool = False,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = LENS_MAX_PIXELS,
    resized_hw: tuple[int, int] | None = None,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Pack one RGB image for Qwen2.5-VL's vision tower.

    Args:
        image: (H, W, 3) uint8 RGB.
        coord_channels: append normalised x, y channels (vision ``in_channels`` = 5).
        resized_hw: force this (h, w) (must be divisible by patch*merge) instead of
            ``smart_resize``.
    Returns:
        pixel_values: (grid_h*grid_w, C*T*P*P) float32, C = 3 or 5.
        image_grid_thw: (1, 3) int64 = [[1, grid_h, grid_w]].
        resized: (h, w) of the image the MLLM sees; its boxes are in these pixels.
    The number of image tokens in the prompt is grid_h*grid_w // merge_size**2.
    """
    image = check_rgb_image(image)
    factor = patch_size * merge_size
    if resized_hw is None:
        resized_hw = smart_resize(image.shape[0], image.shape[1], factor, min_pixels, max_pixels)
    h, w = resized_hw
    resized = resize_rgb(image, h, w)
    mean_a = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_a = np.asarray(std, dtype=np.float32)[:, None, None]
    chw = resized.transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    chw = (chw - mean_a) / std_a
    if coord_channels:
        chw = np.concatenate([chw, coordinate_channels(h, w)], axis=0)
    flat, thw = patchify(chw, patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size)
    return torch.from_numpy(flat), torch.tensor([thw], dtype=torch.long), (h, w)


def num_image_tokens(image_grid_thw: torch.Tensor, merge_size: int) -> int:
    """Image tokens the language model sees for one image: t*h*w // merge_size**2."""
    t, h, w = (int(v) for v in image_grid_thw.reshape(-1, 3)[0])
    return t * h * w // (merge_size * merge_size)


def scale_box(
    box: tuple[float, float, float, float], from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Rescale an xyxy box between two image sizes (e.g. MLLM pixels -> input pixels)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
