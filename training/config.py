"""Stage configurations: flat dataclasses with defaults, loaded from YAML, overridden by key=value.

    cfg = load_config(Stage1Config, "config/training/stage1.yaml", ["lr=1e-4", "max_steps=10"])

Values of overrides are parsed as YAML scalars (``lr=3e-5``, ``lora=true``, ``clip_eps=null``)
and then checked against the field's type; an unknown key is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lens_ros.model.types import ConfigError, short_repr


@dataclass
class TrainConfig:
    """What both stages share: run, model, data, optimisation, operations."""

    # run
    out_dir: str = "runs/lens"
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU), "no", "bf16", "fp16"
    num_threads: int = 0  # torch CPU threads, 0 leaves torch's default
    # model
    model: str = "tiny-random"  # "tiny-random", a model bundle / LENS release directory, or a preset name
    model_dir: str = ""  # local directory a preset's file paths refer to (Qwen2.5-VL, SAM, ...)
    init_from: str = ""  # optional training checkpoint or bundle whose weights start the run
    cot: bool = False  # chain-of-thought prompts/answers (<think>...</think><answer>...</answer>)
    # data
    data: str = "synthetic:train"  # data spec, see lens_training.data.specs.build_dataset
    batch_size: int = 4  # per process, per micro-step
    grad_accum: int = 1
    max_steps: int = 100  # optimizer steps; <= 0 derives them from epochs
    max_minutes: float = 0.0  # > 0: stop after this much training time (final model saved; lr not fully decayed)
    epochs: float = 1.0
    num_workers: int = 0
    # processes (under torchrun): "ddp" replicates the model, "fsdp" shards it (the 3B model)
    distributed: str = "ddp"
    fsdp_wrap: str = "Qwen2_5_VLDecoderLayer,Qwen2_5_VLVisionBlock"  # classes that become FSDP units
    # optimisation
    lr: float = 3e-5
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # 0 disables
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    # operations
    ckpt_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = True  # continue from <out_dir>/checkpoints/latest when it exists
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True


@dataclass
class Stage1Config(TrainConfig):
    """Alignment: MLLM and segmenter frozen; context queries, connector, collapse, projection train."""

    out_dir: str = "runs/stage1"
    lr: float = 3e-5
    warmup_steps: int = 150


@dataclass
class Stage2Config(TrainConfig):
    """GRPO with unified rewards plus BCE + Dice on the same batch."""

    out_dir: str = "runs/stage2"
    lr: float = 3e-6
    # rollouts
    rollout_engine: str = "hf"  # "hf" (transformers generate), "loop" (faster on CPU); more in lens_training.rollout
    group_size: int = 8
    temperature: float = 0.9
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 128
    # loss
    beta: float = 0.04  # k3 KL weight; 0 skips the reference model
    clip_eps: float | None = None  # None: official single-step loss; 0.2 for multi-step updates
    seg_loss_weight: float = 1.0  # BCE + Dice on the same batch
    # rewards (each weight 1 in the paper); format reward on for CoT runs
    box_reward_weight: float = 1.0
    mask_reward_weight: float = 1.0
    format_reward_weight: float = 1.0
    box_l1_weight: float = 0.0  # optional extra box reward 1 - normalised L1
    hit_reward_weight: float = 0.0  # extra reward 1 when the box is on the target (IoU >= 0.5)
    advantage_std_floor: float = 0.0  # A = (r - mean) / (max(std, floor) + 1e-4); 0: LENS
    seg_loss_on_misses: bool = True  # False: BCE + Dice only on rollouts whose box is on the target
    # what trains
    train_mllm: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    train_prompt_encoder: bool = True
    train_mask_decoder: bool = True


@dataclass
class EvalConfig:
    model: str = "tiny-random"
    model_dir: str = ""
    data: str = "synthetic:test"
    device: str = "auto"
    batch_size: int = 8
    limit: int = 0  # 0: the whole split
    out: str = ""  # JSON results path ("" prints only)
    cot: bool = False
    max_new_tokens: int = 128


C = TypeVar("C")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"{key}: {short_repr(value)} fits none of {annotation}: {errors}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{key}: expected a list of {len(args)} values, got {short_repr(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {short_repr(value)}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {short_repr(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {short_repr(value)}")
        return float(value)
    if annotation is str:
        if isinstance(value, (list, tuple, dict)):
            raise ValueError(f"{key}: expected text, got {short_repr(value)}")
        return "" if value is None else str(value)
    return value


def _safe_load(text: str) -> Any:
    """yaml.safe_load, but every malformed input raises YAMLError or ValueError.

    PyYAML's constructors also raise IndexError ("!!float"), KeyError ("!!bool x"),
    AttributeError ("!!timestamp x") and RecursionError (deeply nested lists).
    """
    try:
        return yaml.safe_load(text)
    except (LookupError, AttributeError, RecursionError) as exc:
        raise ValueError(f"malformed YAML ({type(exc).__name__}: {exc})") from exc


def parse_override(text: str) -> tuple[str, Any]:
    """'lr=3e-5' -> ('lr', 3e-05); the value is a YAML scalar or flow list."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    value = _safe_load(raw) if raw != "" else ""
    return key.strip(), value


def _yaml_float(raw: Any) -> Any:
    # YAML 1.1 reads "3e-5" (no dot) as a string; accept it as the number it means.
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        if hints[key] in (float, float | None) or typing.get_origin(hints[key]) is tuple:
            value = [_yaml_float(v) for v in value] if isinstance(value, list) else _yaml_float(value)
        kwargs[key] = _coerce(value, hints[key], key)
    return cls(**kwargs)


def load_config(
    cls: type[C], path: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None
) -> C:
    """Defaults of ``cls`` <- YAML file(s) (flat mappings) <- key=value overrides, in that order.

    Anything wrong with a file or an override raises ConfigError saying which key or file.
    """
    try:
        return _load_config(cls, path, overrides)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"{cls.__name__}: {message}") from exc


def _load_config(
    cls: type[C], path: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None
) -> C:
    """Defaults of ``cls`` <- YAML file(s) (flat mappings, later files win) <- key=value overrides."""
    values: dict[str, Any] = {}
    paths = path if isinstance(path, list) else ([path] if path else [])
    for one in paths:
        loaded = _safe_load(Path(one).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{one}: a config file is a flat mapping of key: value")
        values.update(loaded)
    hints = typing.get_type_hints(cls)
    for text in overrides or []:
        key, value = parse_override(text)
        if hints.get(key) is str:  # keep text as typed: YAML would read "no" as false
            value = text.split("=", 1)[1].strip().strip("'\"")
        values[key] = value
    return config_from_dict(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


__all__ = [
    "TrainConfig",
    "Stage1Config",
    "Stage2Config",
    "EvalConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "parse_override",
]
