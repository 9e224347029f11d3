"""The models, scales and timing tools of ``bench.gpu_bench`` (what is measured lives there).

``Scale``: the real-size configurations (Qwen2.5-VL-3B, SAM ViT-H) and a tiny stand-in with the
same code paths for CPU smoke runs; ``Bench``: builds each model once on first use, on the
device, and shares it between sections.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # imported where used: a missing package fails one section, not the script
    from lens_ros.model.mllm import MLLM, MLLMInputs
    from lens_ros.model.sam_backend import SamSegmenter

IMAGE_HW = (480, 640)
INSTRUCTION = "the red mug left of the bowl"
NEW_TOKENS = 64
BOX_XYXY = (160.0, 120.0, 480.0, 360.0)  # input-image pixels


@dataclass
class Scale:
    """Architecture sizes of one benchmark scale.

    text / vision: Qwen2.5-VL config fields; sam: ``SamConfig`` fields (a dict, so that this
    module imports without segment_anything and a missing package fails one section only).
    """

    name: str
    text: dict
    vision: dict
    sam: dict
    copy_bytes: int
    context_heads: int = 16


# Qwen2.5-VL-3B-Instruct's config.json, written out (random weights: no download).
REAL = Scale(
    name="real",
    text=dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        tie_word_embeddings=True,
    ),
    vision=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        in_channels=3,
        tokens_per_second=2,
        hidden_act="silu",
    ),
    sam=dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    copy_bytes=2 * 2**30,
)

# Same code paths and input sizes, a few narrow layers: for testing this script on a CPU.
TINY = Scale(
    name="tiny",
    text={
        **REAL.text,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
    },
    vision={
        **REAL.vision,
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": 128,
        "fullatt_block_indexes": [1],
    },
    sam=dict(
        image_size=256,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        global_attn_indexes=(1,),
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        window_size=4,
    ),
    copy_bytes=64 * 2**20,
    context_heads=4,
)
SCALES = {"real": REAL, "tiny": TINY}


def log(message: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in ms, the device synchronised before and after each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def free_memory(device: torch.device) -> None:
    """Release what the last section left (allocator cache, peak statistics)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def unique_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of the distinct parameter tensors of ``modules`` (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total


@dataclass
class Bench:
    """Device, sizes, inputs and the models, built on first use and shared by the sections."""

    scale: Scale
    device: torch.device
    dtype: torch.dtype  # the MLLM's (bf16 on CUDA, float32 on a CPU)
    quick: bool
    image: np.ndarray = field(init=False)
    bandwidth_gbps: float | None = None
    build_s: float = 0.0  # seconds to build the MLLM on the device
    eos_ids: list[int] = field(default_factory=list)
    _mllm: MLLM | None = None
    _segmenter: SamSegmenter | None = None

    def __post_init__(self) -> None:
        self.image = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)

    def repeats(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def mllm(self) -> MLLM:
        """lens_ros ``MLLM`` around a random Qwen2.5-VL built directly on the device.

        The LENS-tiny word-level tokenizer stands in for Qwen's (not available offline);
        the config's image/vision token ids are set to its ids, the vocabulary stays
        151936. EOS is disabled (``eos_ids`` emptied) so every generation has exactly the
        requested number of tokens.
        """
        if self._mllm is None:
            from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

            from lens_ros.model import prompts
            from lens_ros.model.mllm import MLLM, ImageConfig
            from lens_training.tiny.tokenizer import build_tiny_tokenizer

            tokenizer = build_tiny_tokenizer()
            ids = {
                "image_token_id": tokenizer.convert_tokens_to_ids(prompts.IMAGE_PAD),
                "video_token_id": tokenizer.convert_tokens_to_ids(prompts.IMAGE_PAD),
                "vision_start_token_id": tokenizer.convert_tokens_to_ids(prompts.VISION_START),
                "vision_end_token_id": tokenizer.convert_tokens_to_ids(prompts.VISION_END),
            }
            eos = tokenizer.convert_tokens_to_ids(prompts.IM_END)
            text = {**self.scale.text, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}
            config = Qwen2_5_VLConfig(
                text_config=text, vision_config=dict(self.scale.vision), tie_word_embeddings=True, **ids
            )
            start = time.perf_counter()
            with torch.device(self.device):  # initialise on the GPU: seconds instead of minutes
                model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=self.dtype)
            model.eval()
            sync(self.device)
            self.build_s = time.perf_counter() - start
            v = self.scale.vision
            image_config = ImageConfig(
                patch_size=v["patch_size"],
                merge_size=v["spatial_merge_size"],
                temporal_patch_size=v["temporal_patch_size"],
                max_pixels=IMAGE_HW[0] * IMAGE_HW[1],
            )
            mllm = MLLM(model, tokenizer, image_config)
            self.eos_ids = list(mllm.eos_ids)
            mllm.eos_ids = []
            self._mllm = mllm
        return self._mllm

    def mllm_inputs(self) -> MLLMInputs:
        """The one-image prompt batch, on the device."""
        mllm = self.mllm()
        packed = mllm.pack(self.image)
        return mllm.collate([mllm.prompt_ids(INSTRUCTION, packed)], [packed]).to(self.device, self.dtype)

    def segmenter(self) -> SamSegmenter:
        """lens_ros ``SamSegmenter`` (float32): ViT-H from segment_anything's registry, or tiny."""
        if self._segmenter is None:
            from lens_ros.model.sam_backend import SAM_REGISTRY, SamConfig, SamSegmenter

            config = SamConfig(**self.scale.sam)
            with torch.device(self.device):
                if self.scale.name == "real":
                    from segment_anything import sam_model_registry

                    assert config == SAM_REGISTRY["vit_h"], "REAL.sam must be segment_anything's vit_h"
                    seg = SamSegmenter(config, sam=sam_model_registry["vit_h"](checkpoint=None))
                else:
                    seg = SamSegmenter(config)
            # buffers made by the legacy torch.Tensor() constructor ignore the device context
            self._segmenter = seg.to(self.device).float().eval()
        return self._segmenter

    def release_mllm(self) -> None:
        self._mllm = None
        free_memory(self.device)
