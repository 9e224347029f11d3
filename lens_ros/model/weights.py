"""Safe loading of weight files: safetensors, or torch.load(weights_only=True).

Every failure becomes a ``ModelFileError`` naming the path and what is wrong, so a node
fails at start-up with a readable message instead of a stack trace from deep inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lens_ros.model.types import ModelFileError


def load_state_dict_file(path: str | Path, *, nested_key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch file (no pickle code execution).

    ``nested_key``: official SAM 2 checkpoints store the state dict under ``"model"``;
    it is unwrapped when present.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelFileError:
        raise
    except Exception as exc:  # corrupt / truncated / pickled code: say so, with the path
        raise ModelFileError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if nested_key is not None and isinstance(state, Mapping) and nested_key in state:
        state = state[nested_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: not a state dict of tensors")
    return dict(state)


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | Path,
    strict: bool = True,
    ignore_missing: tuple[str, ...] = (),
) -> None:
    """``module.load_state_dict`` with shape/key mismatches reported as ``ModelFileError``.

    ``ignore_missing``: key prefixes allowed to be absent (e.g. modules a checkpoint drops).
    """
    own = module.state_dict()
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise ModelFileError(f"{source}: weights do not match the configuration: " + "; ".join(bad_shapes[:5]))
    missing = [k for k in own if k not in state and not k.startswith(ignore_missing)]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ModelFileError(
            f"{source}: weights do not match the configuration: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
