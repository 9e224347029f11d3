"""Model bundle: one directory holding everything to rebuild a LensModel, bit for bit.

    <bundle>/config.json          {"format": "lens_ros.bundle", "version": 1, "lens": LensConfig}
    <bundle>/model.safetensors    the whole LensModel state dict (MLLM, context module, segmenter)
    <bundle>/tokenizer.json, tokenizer_config.json, ...   the tokenizer (save_pretrained)
    <bundle>/draft_ngrams.json    optional: the speculative decoder's starting n-grams
                                  (lens_ros.model.speculative)

Only safetensors and JSON are read, never pickles. Any missing, corrupt or inconsistent
file raises ``ModelFileError`` naming the path and what is wrong.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from lens_ros.model.lens import LensConfig, LensModel
from lens_ros.model.mllm import load_tokenizer
from lens_ros.model.types import ModelFileError

BUNDLE_FORMAT = "lens_ros.bundle"
BUNDLE_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DRAFTS_FILE = "draft_ngrams.json"


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a directory with a bundle config.json."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError):
        return False


def save_bundle(
    out_dir: str | Path, model: LensModel, tokenizer=None, config: LensConfig | None = None, extra: dict | None = None
) -> Path:
    """Write ``model`` (+ its tokenizer and config) as a bundle; returns the directory.

    ``extra``: JSON-serialisable metadata stored next to the config (e.g. training step,
    evaluation numbers).
    """
    from safetensors.torch import save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config or model.config
    tokenizer = tokenizer or model.tokenizer
    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "lens": config.to_dict()}
    if extra:
        meta["extra"] = extra
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
    tokenizer.save_pretrained(str(out))
    return out


def read_bundle_config(path: str | Path) -> tuple[LensConfig, dict]:
    """(LensConfig, raw JSON) of a bundle, validated."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"{path}: model bundle directory not found")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelFileError(f"{cfg_path}: missing (not a lens_ros model bundle)")
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ModelFileError(f"{cfg_path}: invalid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise ModelFileError(f"{cfg_path}: not a lens_ros bundle config (format != {BUNDLE_FORMAT!r})")
    if int(raw.get("version", 0)) > BUNDLE_VERSION:
        raise ModelFileError(
            f"{cfg_path}: bundle version {raw.get('version')} is newer than supported {BUNDLE_VERSION}"
        )
    try:
        return LensConfig.from_dict(raw["lens"]), raw
    except Exception as exc:
        raise ModelFileError(f"{cfg_path}: invalid model configuration ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def _skip_random_init():
    """Skip transformers' weight init while building a model whose weights are then loaded."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older layout
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = contextlib.nullcontext
    with no_init_weights():
        yield


def load_bundle(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LensModel:
    """Rebuild the LensModel of a bundle (eval mode) on ``device``, optionally cast to ``dtype``."""
    from safetensors import safe_open

    path = Path(path)
    config, _ = read_bundle_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing weights file")
    tokenizer = load_tokenizer(path)
    try:
        with _skip_random_init():
            model = LensModel(config, tokenizer)
        # skipping init also skips transformers' weight tying (lm_head <-> embeddings)
        model.mllm.model.tie_weights()
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise ModelFileError(f"{path / CONFIG_FILE}: cannot build the model ({type(exc).__name__}: {exc})") from exc
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelFileError(f"{weights}: corrupt or unreadable safetensors ({type(exc).__name__}: {exc})") from exc
    _load_checked(model, state, weights)
    drafts = path / DRAFTS_FILE
    if drafts.is_file():
        from lens_ros.model.speculative import NgramDrafter

        model.decoder.drafter = NgramDrafter.load(drafts, vocab_size=model.mllm.model.config.text_config.vocab_size)
    model.eval()
    model.to(device)
    return model.cast(dtype) if dtype is not None else model


def _load_checked(model: LensModel, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict saved by ``save_model`` (shared tensors stored once) strictly."""
    own = model.state_dict()
    bad = [
        f"{k}: file {tuple(v.shape)} vs config {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    unexpected = [k for k in state if k not in own]
    if bad or unexpected:
        raise ModelFileError(f"{source}: weights do not match config.json: {(bad + unexpected)[:5]}")
    missing, _ = model.load_state_dict(state, strict=False)
    # Tied parameters are stored once; a key is only really missing if its storage is unset.
    shared = _shared_aliases(model)
    really_missing = [k for k in missing if not (shared.get(k, set()) & state.keys())]
    if really_missing:
        raise ModelFileError(f"{source}: weights missing for {really_missing[:5]}")


def _shared_aliases(model: torch.nn.Module) -> dict[str, set[str]]:
    """name -> other names of the same tensor (tied weights)."""
    by_ptr: dict[int, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_ptr.setdefault(id(tensor), set()).add(name)
    return {n: names - {n} for names in by_ptr.values() for n in names}
