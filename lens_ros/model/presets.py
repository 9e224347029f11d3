"""Named model presets (``config/models/<name>.yaml``) and one loader for any model spec.

A model spec is a preset name (``lens-tiny``, ``lens-3b-sam2-l``, ``lens-3b-sam-h``), a
lens_ros bundle directory, or a released LENS checkpoint directory. ``load_model``
turns any of them into a LensModel; every file is a local path, never a download.

Preset kinds:
    bundle         a lens_ros bundle (``bundle:`` path; ``{package}`` = the lens_ros package dir)
    lens_release   a released LENS directory given as ``model_dir``
    components     Qwen2.5-VL directory + official SAM / SAM 2 checkpoint + trained
                   context module safetensors, all under ``model_dir``
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from lens_ros.model.types import ModelFileError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PRESET_DIRS: tuple[Path, ...] = (
    PACKAGE_DIR.parent / "config" / "models",  # source tree
    Path(sys.prefix) / "share" / "lens_ros" / "config" / "models",  # venv / colcon install
)
DEFAULT_PRESET = "lens-tiny"


@dataclass
class Preset:
    """One preset file, with ``{model_dir}`` / ``{package}`` placeholders still in place."""

    name: str
    kind: str
    data: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def dtype(self) -> str:
        """Precision on CUDA when the dtype is "auto" (the CPU always runs float32)."""
        return str(self.data.get("dtype", "float32"))

    @property
    def auto_device(self) -> str:
        """Where device "auto" runs this model: "cuda" (when there is one) or "cpu" (measured faster)."""
        return str(self.data.get("auto_device", "cuda"))


def preset_dirs() -> list[Path]:
    dirs = list(PRESET_DIRS)
    try:  # an ament install (colcon) puts config/ under share/lens_ros
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("lens_ros")) / "config" / "models")
    except Exception:  # noqa: BLE001 - ament is optional here
        pass
    return dirs


def list_presets() -> list[str]:
    names = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def get_preset(name: str) -> Preset:
    """Read ``<name>.yaml`` from the first preset directory that has it."""
    for d in preset_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except (
                yaml.YAMLError,
                ValueError,
                LookupError,
                AttributeError,
                RecursionError,
            ) as exc:  # see read_params_file
                raise ModelFileError(f"{path}: invalid YAML ({exc})") from exc
            if "kind" not in data:
                raise ModelFileError(f"{path}: preset has no 'kind'")
            return Preset(name=name, kind=str(data["kind"]), data=data, path=path)
    raise ModelFileError(f"unknown model preset {name!r} (known: {', '.join(list_presets()) or 'none found'})")


def _fill(value: str, model_dir: Path | None, name: str) -> Path:
    if "{model_dir}" in value and model_dir is None:
        raise ModelFileError(f"preset {name!r} needs a model directory (model_dir) for {value}")
    return Path(value.format(model_dir=model_dir, package=PACKAGE_DIR))


def resolve_device(device: str | torch.device, preferred: str = "cuda") -> torch.device:
    """The one place device "auto" is decided: ``preferred`` (the preset's ``auto_device``) when it
    exists here, else the CPU. A CUDA device asked for where there is none is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if preferred == "cuda" and torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here (use cpu or auto)")
    return device


def resolve_dtype(
    dtype: str | torch.dtype | None, device: str | torch.device, preferred: str = "bfloat16"
) -> torch.dtype:
    """The one place "auto" precision is decided.

    'float32'/'bfloat16'/'float16' as asked; 'auto'/None: ``preferred`` (the preset's own
    choice) on CUDA, float32 on the CPU.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        dtype = preferred if torch.device(device).type == "cuda" else "float32"
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    return table[dtype]


def load_model(
    spec: str | Path = DEFAULT_PRESET,
    *,
    model_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
):
    """A LensModel (eval mode) from a preset name, bundle directory or LENS release directory."""
    from lens_ros.model.bundle import is_bundle, load_bundle
    from lens_ros.model.lens_release import RELEASE_MAX_NEW_TOKENS, is_lens_release, load_lens_release

    model_dir = Path(model_dir) if model_dir else None
    path = Path(spec)
    if path.is_dir() or "/" in str(spec) or str(spec).startswith("."):
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        if is_bundle(path):
            return load_bundle(path, device=device, dtype=torch_dtype)
        if is_lens_release(path):
            return load_lens_release(path, dtype=torch_dtype, device=device)
        raise ModelFileError(f"{path}: neither a lens_ros bundle nor a LENS release directory")
    preset = get_preset(str(spec))
    device = resolve_device(device, preferred=preset.auto_device)
    torch_dtype = resolve_dtype(dtype, device, preferred=preset.dtype)
    data = preset.data
    if model_dir is None and data.get("model_dir"):
        model_dir = Path(str(data["model_dir"]))
    if preset.kind == "bundle":
        return load_bundle(_fill(str(data["bundle"]), model_dir, preset.name), device=device, dtype=torch_dtype)
    if model_dir is not None and is_bundle(model_dir):
        return load_bundle(model_dir, device=device, dtype=torch_dtype)
    if preset.kind == "lens_release":
        if model_dir is None:
            raise ModelFileError(f"preset {preset.name!r} needs model_dir: a released LENS checkpoint directory")
        return load_lens_release(
            model_dir,
            dtype=torch_dtype,
            device=device,
            sam2_config=str(data.get("sam2_config", "configs/sam2/sam2_hiera_l.yaml")),
            cot=bool(data.get("cot", False)),
            max_new_tokens=int(data.get("max_new_tokens", RELEASE_MAX_NEW_TOKENS)),
            image_longest_side=int(data.get("image_longest_side") or 0),
            sam_resize=str(data.get("sam_resize", "pil")),
            sam2_memory_checkpoint=(
                _fill(str(data["sam2_memory_checkpoint"]), model_dir, preset.name)
                if data.get("sam2_memory_checkpoint")
                else None
            ),
        )
    if preset.kind == "components":
        return _load_components(preset, model_dir, device, torch_dtype)
    raise ModelFileError(f"{preset.path}: unknown preset kind {preset.kind!r}")


def _load_components(preset: Preset, model_dir: Path | None, device, dtype: torch.dtype):
    """Qwen2.5-VL dir + official SAM/SAM 2 checkpoint + trained context-module safetensors."""
    from lens_ros.model.context_module import ContextModuleConfig
    from lens_ros.model.lens import LensConfig, LensModel
    from lens_ros.model.mllm import ImageConfig, load_qwen, load_tokenizer, read_generation_config
    from lens_ros.model.weights import load_into, load_state_dict_file

    data, name = preset.data, preset.name
    qwen_dir = _fill(str(data["mllm"]), model_dir, name)
    tokenizer = load_tokenizer(qwen_dir)
    qwen = load_qwen(qwen_dir, dtype=dtype)
    seg_spec = data.get("segmenter", {})
    checkpoint = _fill(str(seg_spec["checkpoint"]), model_dir, name) if seg_spec.get("checkpoint") else None
    if seg_spec.get("kind", "sam") == "sam":
        from lens_ros.model.sam_backend import SamSegmenter

        segmenter = SamSegmenter.from_registry(str(seg_spec.get("size", "vit_h")), checkpoint)
    else:
        from lens_ros.model.sam2_backend import Sam2Segmenter

        segmenter = Sam2Segmenter.from_name(str(seg_spec.get("size", "hiera_l")), checkpoint)
    finetuned = seg_spec.get("finetuned")
    if finetuned:
        ft_path = _fill(str(finetuned), model_dir, name)
        if ft_path.is_file():  # optional: RL-tuned prompt encoder / mask decoder
            load_into(segmenter.sam, load_state_dict_file(ft_path), source=ft_path, strict=False)
    pre = qwen_dir / "preprocessor_config.json"
    image = ImageConfig.from_preprocessor_config(pre, data.get("max_pixels")) if pre.is_file() else ImageConfig()
    image.coord_channels = int(qwen.config.vision_config.in_channels) == 5
    hidden = int(qwen.config.text_config.hidden_size)
    config = LensConfig(
        qwen=qwen.config.to_dict(),
        image=image,
        context=ContextModuleConfig(
            hidden_size=hidden, num_queries=int(data.get("num_queries", 64)), out_dim=segmenter.prompt_dim
        ),
        segmenter_kind=segmenter.kind,
        segmenter=segmenter.config.to_dict(),
        cot=bool(data.get("cot", False)),
        max_new_tokens=int(data.get("max_new_tokens", 256)),
        generation=read_generation_config(qwen_dir),  # Qwen2.5-VL-Instruct's repetition_penalty
    )
    model = LensModel(config, tokenizer, qwen_model=qwen, segmenter=segmenter)
    ctx_path = _fill(str(data["context_weights"]), model_dir, name)
    state = load_state_dict_file(ctx_path)
    state = {k.removeprefix("context."): v for k, v in state.items()}
    load_into(model.context, state, source=ctx_path)
    model.eval()
    return model.to(device).cast(dtype)
