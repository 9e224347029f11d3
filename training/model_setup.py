"""Loading the LensModel a run starts from, and what each stage trains (freeze sets).

stage 1: only the context module (queries, connector, Conv1d, projection) trains;
         MLLM and segmenter are frozen.
stage 2: MLLM (full, or LoRA adapters via peft; vision tower frozen unless asked),
         context module, segmenter prompt encoder and mask decoder train;
         the segmenter's image encoder stays frozen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

TINY_RANDOM = ("tiny-random", "tiny-random-sam", "tiny-random-sam2")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load_lens_model(spec: str, seed: int = 0, model_dir: str = ""):
    """A float32 LensModel (training keeps fp32 master weights; autocast does the rest).

    spec: "tiny-random[-sam|-sam2]" (random tiny model, seeded), a bundle directory, a LENS
    release directory or a preset name (``config/models``; ``model_dir`` fills its paths).
    """
    if spec in TINY_RANDOM:
        from lens_ros.model.tiny import build_tiny_random_model

        segmenter = "sam2" if spec.endswith("sam2") else "sam"
        model, _, _ = build_tiny_random_model(seed=seed, segmenter=segmenter)
        return model
    from lens_ros.model.presets import load_model

    return load_model(spec, model_dir=model_dir or None, device="cpu", dtype="float32")


def load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Start from earlier weights: a bundle (all weights) or a run's final/ or checkpoint
    directory (the trainable subset it saved)."""
    path = Path(path)
    for name in ("model.safetensors", "trainable.safetensors"):
        if (path / name).is_file():
            weights = load_file(str(path / name))
            break
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or trainable.safetensors to start from")
    load_partial_weights(model, weights, str(path))


def load_partial_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Load a subset of a LensModel's weights; keys may carry the training objective's
    "model." prefix (checkpoints and trainable.safetensors). Unknown keys are an error."""
    weights = {k.removeprefix("model."): v for k, v in weights.items()}
    own = model.state_dict()
    unknown = [k for k in weights if k not in own]
    if unknown:
        raise KeyError(f"{source}: weights for parameters this model does not have: {unknown[:5]}")
    model.load_state_dict(weights, strict=False)


def segmenter_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The segmenter's image encoder, prompt encoder and mask decoder (SAM or SAM 2 names).

    SAM 2's video-memory modules are not used by LENS and stay frozen with the encoder.
    """
    sam = model.segmenter.sam
    if hasattr(sam, "sam_prompt_encoder"):  # SAM 2
        return {
            "image_encoder": sam.image_encoder,
            "prompt_encoder": sam.sam_prompt_encoder,
            "mask_decoder": sam.sam_mask_decoder,
        }
    return {"image_encoder": sam.image_encoder, "prompt_encoder": sam.prompt_encoder, "mask_decoder": sam.mask_decoder}


def freeze_stage1(model: nn.Module) -> None:
    model.requires_grad_(False)
    model.context.requires_grad_(True)


def freeze_stage2(
    model: nn.Module,
    train_mllm: bool = True,
    train_vision_tower: bool = False,
    train_prompt_encoder: bool = True,
    train_mask_decoder: bool = True,
    lora: bool = False,
) -> None:
    model.requires_grad_(False)
    model.context.requires_grad_(True)
    qwen = model.mllm.model
    if train_mllm:
        if lora:
            for name, param in qwen.named_parameters():
                param.requires_grad_("lora_" in name)
        else:
            qwen.requires_grad_(True)
            if not train_vision_tower:
                visual = getattr(qwen, "visual", None) or getattr(qwen.model, "visual", None)
                if visual is not None:
                    visual.requires_grad_(False)
    parts = segmenter_parts(model)
    parts["prompt_encoder"].requires_grad_(train_prompt_encoder)
    parts["mask_decoder"].requires_grad_(train_mask_decoder)
    parts["image_encoder"].requires_grad_(False)


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, targets: tuple[str, ...] = LORA_TARGETS) -> None:
    """Insert peft LoRA adapters into the language model's linear layers, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    language_model = model.mllm.model.model.language_model
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets))
    inject_adapter_in_model(config, language_model)


def _lora_layers(module: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The base model without its LoRA adapters (the frozen GRPO reference), temporarily."""
    layers = _lora_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merge_lora(model: nn.Module) -> None:
    """Fold LoRA adapters into their base weights and remove them (before export)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())


def has_lora(model: nn.Module) -> bool:
    return bool(_lora_layers(model))


def trainable_parameter_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}
