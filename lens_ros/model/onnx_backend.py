"""ONNX export of the segmenter and an onnxruntime ``Segmenter`` with the same interface.

Exported graphs (opset 17, float32):
    decoder.onnx   (image_embed [, high_res_0, high_res_1], sparse_prompt (B, N, D))
                   -> (low_res_logits (B, 1, h, w), iou (B, 1))
                   sparse_prompt = [box corner tokens] + LENS context prompt tokens; the dense
                   "no mask" embedding and the positional encoding are constants of the graph.
    encoder.onnx   (image (1, 3, S, S) preprocessed) -> image_embed [, high_res_0, high_res_1]
                   (SAM, and SAM 2 without memory modules; with memory the torch encoder
                   also yields the memory path's inputs, so it stays in torch).
Box-token embedding and the final upscaling to the input resolution stay in torch: they
are a few element-wise operations whose shapes depend on the prompt and the image size.

onnxruntime uses CUDAExecutionProvider when it is available and the device is CUDA,
else CPUExecutionProvider.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lens_ros.model.segmenter import DecodeOutput, ImageEmbedding, Segmenter, check_prompts
from lens_ros.model.types import ModelFileError

OPSET = 17
DECODER_FILE = "decoder.onnx"
ENCODER_FILE = "encoder.onnx"
META_FILE = "onnx_meta.json"


class _DecoderGraph(nn.Module):
    """Mask decoder with the dense prompt and positional encoding folded in."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.high_res = segmenter.kind == "sam2"

    def forward(self, image_embed: torch.Tensor, *rest: torch.Tensor):
        if self.high_res:
            high_res_0, high_res_1, sparse = rest
            feats = {"image_embed": image_embed, "high_res_0": high_res_0, "high_res_1": high_res_1}
        else:
            (sparse,) = rest
            feats = {"image_embed": image_embed}
        emb = ImageEmbedding(feats, (1, 1), (1, 1))
        pe = (
            self.segmenter.sam.prompt_encoder if self.segmenter.kind == "sam" else self.segmenter.sam.sam_prompt_encoder
        )
        h, w = pe.image_embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, h, w)
        return self.segmenter.decode_low_res(emb, sparse, dense, False)


class _EncoderGraph(nn.Module):
    """Preprocessed image -> the embedding features the decoder graph takes."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image: torch.Tensor):
        feats = self.segmenter.encode_batch(image, [(1, 1)], [(1, 1)])[0].features
        return tuple(feats[name] for name in ENCODER_OUTPUTS[self.segmenter.kind])


ENCODER_OUTPUTS = {"sam": ("image_embed",), "sam2": ("image_embed", "high_res_0", "high_res_1")}


def fingerprint(segmenter: Segmenter) -> str:
    """Hash of the segmenter's weights: exported graphs are re-used only for the same weights."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(segmenter.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def export_segmenter(segmenter: Segmenter, out_dir: str | Path, export_encoder: bool = True) -> Path:
    """Write decoder.onnx (+ encoder.onnx for SAM) and onnx_meta.json to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg = segmenter.float().eval()
    param = next(seg.parameters())
    device = param.device
    s = seg.image_size
    image = torch.zeros(1, 3, s, s, device=device)
    emb = seg.encode_batch(image, [(s, s)], [(s, s)])[0]
    sparse = torch.zeros(1, 3, seg.prompt_dim, device=device)
    names = ["image_embed"] + (["high_res_0", "high_res_1"] if seg.kind == "sam2" else []) + ["sparse_prompt"]
    args = tuple(emb.features[n] for n in names[:-1]) + (sparse,)
    dynamic = {"sparse_prompt": {1: "num_tokens"}}
    if seg.kind == "sam":  # SAM's decoder broadcasts one image over B prompts
        dynamic["sparse_prompt"][0] = "batch"
        dynamic.update(low_res_logits={0: "batch"}, iou={0: "batch"})
    # the tracer warns about shape asserts and python branches inside SAM; the graphs are
    # checked against torch by the parity tests instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _DecoderGraph(seg),
            args,
            str(out / DECODER_FILE),
            input_names=names,
            output_names=["low_res_logits", "iou"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
        has_encoder = export_encoder and not getattr(seg, "has_memory", False)
        if has_encoder:
            torch.onnx.export(
                _EncoderGraph(seg),
                (image,),
                str(out / ENCODER_FILE),
                input_names=["image"],
                output_names=list(ENCODER_OUTPUTS[seg.kind]),
                opset_version=OPSET,
                dynamo=False,
            )
    meta = {"fingerprint": fingerprint(seg), "kind": seg.kind, "encoder": has_encoder, "opset": OPSET}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def providers_for(device: torch.device | str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(ort):
    """onnxruntime's defaults spin their idle worker threads, one per core: in a process where
    torch (preprocessing, prompt embeddings, the MLLM) and the ROS executor take turns with the
    sessions, the spinning threads took the CPU from both (lens-tiny at 640x480 on the 2-core CPU,
    bench/results/cpu2-2026-12-02-model-quick-ort-{before,after}.md: decoder 10.1 -> 4.6 ms, encoder 31.3 -> 14.8 ms
    without spinning, now 1.5x and 1.1x torch's). The sessions use as many threads as torch,
    and sleep when idle."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxSegmenter:
    """``Segmenter``-compatible inference on onnxruntime sessions (no autograd).

    Keeps the torch segmenter for preprocessing, box-token embedding and upscaling (and
    the encoder of a SAM 2 with memory); decoder and encoder run in onnxruntime.
    """

    def __init__(self, segmenter: Segmenter, onnx_dir: Path, device: torch.device | str = "cpu") -> None:
        import onnxruntime as ort

        self.torch_segmenter = segmenter
        self.kind = segmenter.kind
        self.image_size = segmenter.image_size
        self.prompt_dim = segmenter.prompt_dim
        self.device = torch.device(device)
        meta_path = Path(onnx_dir) / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{meta_path}: missing or invalid ({exc})") from exc
        self.providers = providers_for(device)
        opts = session_options(ort)
        try:
            self.decoder = ort.InferenceSession(str(Path(onnx_dir) / DECODER_FILE), opts, providers=self.providers)
            self.encoder = (
                ort.InferenceSession(str(Path(onnx_dir) / ENCODER_FILE), opts, providers=self.providers)
                if meta.get("encoder")
                else None
            )
        except Exception as exc:
            raise ModelFileError(f"{onnx_dir}: cannot open ONNX graphs ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_segmenter(
        cls,
        segmenter: Segmenter,
        onnx_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
        export_encoder: bool = True,
    ) -> OnnxSegmenter:
        """Export (unless ``onnx_dir`` already holds graphs of the same weights) and open."""
        if onnx_dir is None:
            onnx_dir = Path(tempfile.mkdtemp(prefix="lens_onnx_"))
        onnx_dir = Path(onnx_dir)
        meta_path = onnx_dir / META_FILE
        fresh = False
        if meta_path.is_file():
            try:
                fresh = json.loads(meta_path.read_text()).get("fingerprint") == fingerprint(segmenter)
            except ValueError:
                fresh = False
        if not fresh:
            # export from a float32 CPU copy so the model used by torch keeps its device/dtype
            import copy

            export_segmenter(copy.deepcopy(segmenter).float().cpu(), onnx_dir, export_encoder)
        return cls(segmenter, onnx_dir, device)

    # -- Segmenter interface ----------------------------------------------------------------
    def preprocess(self, image: np.ndarray):
        return self.torch_segmenter.preprocess(image)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        if self.encoder is None:
            emb = self.torch_segmenter.encode(image)
            return emb.to("cpu", torch.float32)
        tensor, input_size = self.preprocess(image)
        outputs = self.encoder.run(None, {"image": tensor[None].float().numpy()})
        feats = {name: torch.from_numpy(o) for name, o in zip(ENCODER_OUTPUTS[self.kind], outputs, strict=True)}
        return ImageEmbedding(feats, tuple(image.shape[:2]), input_size)

    @torch.no_grad()
    def decode(
        self,
        embedding: ImageEmbedding,
        prompt_tokens: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> DecodeOutput:
        if multimask_output:
            raise ValueError("the exported decoder gives single-mask output only")
        seg = self.torch_segmenter
        batch = check_prompts(prompt_tokens, boxes, self.prompt_dim)
        dev = next(seg.parameters()).device
        model_boxes = None if boxes is None else seg.model_boxes(boxes.to(dev).float(), embedding.original_size)
        tokens = None if prompt_tokens is None else prompt_tokens.to(dev)
        sparse, _ = seg.prompt_embeddings(batch, tokens, model_boxes)
        sparse = sparse.float().cpu().numpy()
        feats = {k: v.float().cpu().numpy() for k, v in embedding.features.items()}
        if self.kind == "sam":
            low, iou = self.decoder.run(None, {"image_embed": feats["image_embed"], "sparse_prompt": sparse})
        else:  # graph traced for one prompt set
            outs = [
                self.decoder.run(
                    None,
                    {
                        "image_embed": feats["image_embed"],
                        "high_res_0": feats["high_res_0"],
                        "high_res_1": feats["high_res_1"],
                        "sparse_prompt": sparse[i : i + 1],
                    },
                )
                for i in range(batch)
            ]
            low = np.concatenate([o[0] for o in outs])
            iou = np.concatenate([o[1] for o in outs])
        low_t = torch.from_numpy(low)
        return DecodeOutput(seg.upscale(low_t.to(dev), embedding).cpu(), torch.from_numpy(iou), low_t)
