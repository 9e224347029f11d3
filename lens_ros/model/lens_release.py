"""Loader for the released LENS checkpoint directories (hub names OuyBin/LENS, ...).

A release directory is a ``from_pretrained`` folder of the official
``SAMR1ForConditionalGeneration_qwen2p5`` (Qwen2.5-VL-3B + LENS heads + SAM 2 Hiera-L
without memory modules): ``config.json`` (Qwen2.5-VL config plus ``num_of_query``),
safetensors shards (+ ``model.safetensors.index.json``), tokenizer and processor files.

Key names, from the official module names:
    model.* / visual.* / lm_head.*          Qwen2.5-VL (transformers 4.5x layout)
    learnable_query, connector.*, conv_1d.*, proj_to_sam.*   the context module
    sam.*                                   SAM2Base (sam2_hiera_l.yaml), memory modules removed
The Qwen part is loaded by transformers (which maps its legacy key layout); the rest is
read from the same shards here.

What the official code does with these weights, and the loaded model does too: the context
queries are read by a second pass over prompt + completion + queries with plain 1D rotary
positions (``LensConfig.mask_pass`` "rerun"); the questions are the official templates
without a period added; ``generation_config.json`` (Qwen2.5-VL's repetition_penalty 1.05)
applies to decoding; answers may run to 768 new tokens (the evaluations' ``max_length``);
the ReasonSeg checkpoints see the image resized to a longest side of 640 before
``smart_resize`` (``image_longest_side``); SAM 2's 1024 px input is resized as in their
training (``sam_resize``: PIL bilinear for LENS, OpenCV for ReasonSeg).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lens_ros.model import prompts
from lens_ros.model.context_module import ContextModuleConfig
from lens_ros.model.lens import LensConfig, LensModel
from lens_ros.model.mllm import ImageConfig, load_qwen, load_tokenizer, read_generation_config
from lens_ros.model.sam2_backend import MEMORY_MODULES, SAM2_CONFIGS, Sam2Config, Sam2Segmenter
from lens_ros.model.types import ModelFileError
from lens_ros.model.weights import load_into, load_state_dict_file

CONTEXT_PREFIXES = ("learnable_query", "connector.", "conv_1d.", "proj_to_sam.")
SAM_PREFIX = "sam."
RELEASE_MAX_NEW_TOKENS = 768  # the official evaluations generate with max_length=768


def is_lens_release(path: str | Path) -> bool:
    """True for a directory whose config.json carries the LENS ``num_of_query`` field."""
    cfg = Path(path) / "config.json"
    try:
        return cfg.is_file() and "num_of_query" in json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a from_pretrained directory (sharded or single)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise ModelFileError(f"{index}: invalid index ({exc})") from exc
        files = [path / n for n in names]
    else:
        files = sorted(path.glob("*.safetensors"))
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise ModelFileError(f"{path}: safetensors weights missing {[str(m) for m in missing] or ''}".rstrip())
    return files


def read_prefixed(files: list[Path], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with one of ``prefixes``, from all shards."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    if key.startswith(prefixes):
                        out[key] = handle.get_tensor(key)
        except Exception as exc:
            raise ModelFileError(f"{f}: corrupt or unreadable safetensors ({type(exc).__name__}: {exc})") from exc
    return out


def load_lens_release(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    sam2_config: str = SAM2_CONFIGS["hiera_l"],
    sam2_overrides: tuple[str, ...] = (),
    cot: bool = False,
    max_new_tokens: int = RELEASE_MAX_NEW_TOKENS,
    image_longest_side: int = 0,
    sam_resize: str = "pil",
    sam2_memory_checkpoint: str | Path | None = None,
) -> LensModel:
    """A LensModel with the published weights of a LENS release directory.

    ``sam2_config`` (+ hydra ``sam2_overrides``): the SAM 2 the release was trained with
    (Hiera-L, SAM 2.0).
    ``sam2_memory_checkpoint``: an official SAM 2 checkpoint of the same size
    (``sam2_hiera_large.pt``) whose video-memory modules are added, for memory tracking;
    the release itself has none.
    ``cot``: use the CoT question (LENS_ReasonSeg_CoT).
    ``image_longest_side``: 640 for the ReasonSeg checkpoints (LENS_ReasonSeg, _FT, _CoT),
    0 (smart_resize alone) for LENS.
    ``sam_resize``: how SAM 2's input is resized (``sam2_backend.RESIZES``): "pil" as LENS
    was trained and evaluated, "cv2" for the ReasonSeg checkpoints.
    """
    path = Path(path)
    if not is_lens_release(path):
        raise ModelFileError(f"{path}: not a LENS release directory (config.json without num_of_query)")
    raw = json.loads((path / "config.json").read_text())
    files = weight_files(path)
    tokenizer = load_tokenizer(path)
    qwen = load_qwen(path, dtype=dtype, quiet=True)  # the LENS heads are 'unexpected' to transformers
    hidden = int(qwen.config.text_config.hidden_size)
    num_queries = int(raw.get("num_of_query") or 64)
    pre = path / "preprocessor_config.json"
    image = ImageConfig.from_preprocessor_config(pre) if pre.is_file() else ImageConfig()
    image.coord_channels = int(qwen.config.vision_config.in_channels) == 5
    image.longest_side = int(image_longest_side)
    keep_memory = sam2_memory_checkpoint is not None
    segmenter = Sam2Segmenter(
        Sam2Config(sam2_config, tuple(sam2_overrides), keep_memory=keep_memory, resize=sam_resize)
    )
    config = LensConfig(
        qwen=qwen.config.to_dict(),
        image=image,
        context=ContextModuleConfig(hidden_size=hidden, num_queries=num_queries, out_dim=segmenter.prompt_dim),
        segmenter_kind="sam2",
        segmenter=segmenter.config.to_dict(),
        system_prompt=prompts.LENS_RELEASE_SYSTEM_PROMPT,
        cot=cot,
        max_new_tokens=max_new_tokens,
        mask_pass="rerun",
        question_final_period=False,
        generation=read_generation_config(path),
    )
    model = LensModel(config, tokenizer, qwen_model=qwen, segmenter=segmenter)
    heads = read_prefixed(files, CONTEXT_PREFIXES + (SAM_PREFIX,))
    context_state = {k: v for k, v in heads.items() if k.startswith(CONTEXT_PREFIXES)}
    sam_state = {k[len(SAM_PREFIX) :]: v for k, v in heads.items() if k.startswith(SAM_PREFIX)}
    if not context_state:
        raise ModelFileError(f"{path}: no context-module weights (learnable_query, connector.*, ...) in the shards")
    if not sam_state:
        raise ModelFileError(f"{path}: no SAM 2 weights (sam.*) in the shards")
    load_into(model.context, context_state, source=path)
    load_into(model.segmenter.sam, sam_state, source=path, ignore_missing=MEMORY_MODULES)
    if keep_memory:
        official = load_state_dict_file(sam2_memory_checkpoint, nested_key="model")
        memory_state = {k: v for k, v in official.items() if k.startswith(MEMORY_MODULES)}
        own = [k for k in model.segmenter.sam.state_dict() if k.startswith(MEMORY_MODULES)]
        missing = sorted(set(own) - set(memory_state))
        if missing:
            raise ModelFileError(f"{sam2_memory_checkpoint}: SAM 2 memory weights missing for {missing[:5]}")
        load_into(model.segmenter.sam, memory_state, source=sam2_memory_checkpoint, strict=False)
    model.eval()
    return model.to(device).cast(dtype)
