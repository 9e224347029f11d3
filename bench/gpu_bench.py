"""One-shot GPU benchmark of the real-size LENS parts: random weights, nothing downloaded.

    python -m bench.gpu_bench --out DIR                       # one H100: about 2 minutes
    python -m bench.gpu_bench --out DIR --quick --scale tiny  # smoke test of every path on a CPU

Sections, each in its own try/except (a failure is recorded in the results, the next
section runs; the results files are rewritten after every section):

1. bandwidth: device-to-device copy of 2 GiB, GB/s = bytes read + written / time.
2. mllm: Qwen2.5-VL-3B architecture in bf16 inside lens_ros's ``MLLM``: vision tower,
   prefill of one 640x480 image + instruction, decode ms/token (64 tokens, EOS ignored) of
   our loop engine on the dynamic cache, on the static cache (``static_decode``), on the
   static cache with each step replayed as a CUDA graph (eager on a CPU), and of
   transformers' ``generate``, each as a multiple of the bandwidth floor of one decode step
   (LM weight bytes / measured GB/s) and checked for the dynamic loop's tokens; one decoder
   step and lm_head + argmax alone.
3. sam: SAM ViT-H image encoder at 1024x1024 in fp32 (plain and TF32) and bf16; prompt
   encoder + mask decoder with a box prompt.
4. pipeline: ``Pipeline.segment`` end to end on a LensModel assembled from those models,
   each timed call from a fixed speculative-drafter state (empty, or primed with the answer),
   with the dynamic cache and with the static cache + CUDA graph (``PipelineConfig.decode``).
5. onnxruntime: the project's ONNX export of the SAM mask decoder, ORT vs torch, when
   onnxruntime has the CUDA provider (on a CPU run: the CPU provider); a CUDA run without
   the provider says "NOT MEASURED" and why.

``--scale tiny`` swaps in a few-layer, narrow version of every model (same code paths,
same 640x480 image and token counts) so the whole script can be tested on a CPU.
Results: ``DIR/<machine>-<date>-gpu[-quick][-tiny].json`` and ``.md`` (bench/results_io.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported where used: a missing package fails one section, not the script
    pass

from bench.gpu_setup import (
    BOX_XYXY,
    IMAGE_HW,
    INSTRUCTION,
    NEW_TOKENS,
    SCALES,
    Bench,
    free_memory,
    log,
    median_ms,
    peak_mib,
    unique_bytes,
)


# -- sections ------------------------------------------------------------------------------
def environment(b: Bench) -> dict:
    rows = [
        {"item": "torch", "value": torch.__version__},
        {"item": "CUDA (torch build)", "value": torch.version.cuda},
        {"item": "device", "value": str(b.device)},
        {"item": "scale", "value": b.scale.name},
        {"item": "CPU count", "value": os.cpu_count()},
        {"item": "python", "value": platform.python_version()},
    ]
    for name in ("transformers", "segment_anything", "onnxruntime", "numpy"):
        try:
            module = __import__(name)
            rows.append({"item": name, "value": getattr(module, "__version__", "installed")})
        except ImportError as exc:
            rows.append({"item": name, "value": f"not installed ({exc})"})
    if b.device.type == "cuda":
        props = torch.cuda.get_device_properties(b.device)
        rows += [
            {"item": "GPU", "value": torch.cuda.get_device_name(b.device)},
            {"item": "GPU memory (GiB)", "value": round(props.total_memory / 2**30, 1)},
            {"item": "GPU SMs / capability", "value": f"{props.multi_processor_count} / {props.major}.{props.minor}"},
            {"item": "cuDNN", "value": torch.backends.cudnn.version()},
            {"item": "driver", "value": _driver_version()},
        ]
    return {"columns": ["item", "value"], "rows": rows}


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def bandwidth(b: Bench) -> dict:
    """Device-to-device copy, median of 10 (CUDA events on a GPU)."""
    n = b.scale.copy_bytes
    src = torch.ones(n, dtype=torch.uint8, device=b.device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    times = []
    for _ in range(10):
        if b.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    b.bandwidth_gbps = 2 * n / (ms / 1000) / 1e9
    del src, dst
    return {
        "note": f"copy of {n / 2**30:.3g} GiB; GB/s counts bytes read + written (2 x size), 1 GB = 1e9 bytes.",
        "columns": ["measure", "ms", "value"],
        "rows": [{"measure": "copy, median of 10", "ms": ms, "value": f"{b.bandwidth_gbps:.0f} GB/s"}],
    }


# The loop engine's decode steps: (row name, GenerationSettings fields).
DECODE_STEPS = (
    ("loop, dynamic cache (lean step)", {}),
    ("loop, static cache", {"static_cache": True}),
    ("loop, static cache + CUDA graph", {"static_cache": True, "cuda_graph": True}),
)


def mllm_section(b: Bench) -> dict:
    from lens_ros.model.decoding import Decoder, GenerationSettings

    mllm = b.mllm()
    decoder = Decoder(mllm)
    model = mllm.model
    inputs = b.mllm_inputs()
    image_tokens = int(inputs.mm_token_type_ids.sum())
    repeats, gen_repeats = b.repeats(10, 3), b.repeats(3, 2)

    def loop(n: int, **step):
        return decoder.generate(inputs, GenerationSettings(max_new_tokens=n, **step), engine="loop")

    def hf(n: int):
        model.model.rope_deltas = None  # as Decoder._hf: no state from an earlier call
        out = model.generate(
            **inputs.hf_kwargs(),
            max_new_tokens=n,
            min_new_tokens=n,  # suppresses EOS: exactly n tokens
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=b.eos_ids,
            pad_token_id=mllm.pad_id,
        )
        model.model.rope_deltas = None
        return out

    weight_bytes = unique_bytes([model.model.language_model, model.lm_head])
    tied = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    floor_ms = weight_bytes / (b.bandwidth_gbps * 1e9) * 1000 if b.bandwidth_gbps else None

    def x_floor(ms: float) -> float | None:
        return round(ms / floor_ms, 2) if floor_ms else None

    rows = []
    with torch.no_grad():
        log("mllm: vision tower + embeddings")
        vision_ms = median_ms(lambda: mllm.embed(inputs), repeats, b.device)
        rows.append({"part": f"vision tower + embeddings ({image_tokens} image tokens)", "ms": vision_ms})
        prefill_ms = None
        reference: list[int] | None = None
        for name, step in DECODE_STEPS:
            log(f"mllm: {name}, 1 and {NEW_TOKENS} tokens")
            first_ms = median_ms(lambda step=step: loop(1, **step), repeats, b.device)
            answer = loop(NEW_TOKENS, **step).completion_ids[0]  # also the warm-up (graph capture)
            total_ms = median_ms(lambda step=step: loop(NEW_TOKENS, **step), gen_repeats, b.device, warmup=0)
            decode_ms = (total_ms - first_ms) / max(len(answer) - 1, 1)
            reference = answer if reference is None else reference
            same = "same tokens as the dynamic loop" if answer == reference else "TOKENS DIFFER from the dynamic loop"
            detail = f"{len(answer)} tokens; {same}"
            if step.get("cuda_graph"):
                graph = decoder.decode_step(GenerationSettings(static_cache=True, cuda_graph=True))
                detail += f"; graph: {graph.graph_status}"
            if prefill_ms is None:
                prefill_ms = first_ms
                rows.append({"part": "prefill (loop engine: embed + LM + first token)", "ms": prefill_ms})
            rows += [
                {"part": f"decode per token, {name}", "ms": decode_ms, "x_floor": x_floor(decode_ms), "value": detail},
                {"part": f"{name}, {len(answer)} tokens in all", "ms": total_ms},
            ]
        log(f"mllm: HF generate, 1 and {NEW_TOKENS} tokens")
        hf_prefill_ms = median_ms(lambda: hf(1), gen_repeats, b.device)
        hf_tokens = int(hf(NEW_TOKENS).shape[1] - inputs.input_ids.shape[1])
        hf_ms = median_ms(lambda: hf(NEW_TOKENS), gen_repeats, b.device, warmup=0)
        hf_decode_ms = (hf_ms - hf_prefill_ms) / max(hf_tokens - 1, 1)
        rows += [
            {"part": "HF generate, 1 token", "ms": hf_prefill_ms},
            {
                "part": "decode per token, HF generate (dynamic cache)",
                "ms": hf_decode_ms,
                "x_floor": x_floor(hf_decode_ms),
                "value": f"{hf_tokens} tokens",
            },
            {"part": f"HF generate, {hf_tokens} tokens in all", "ms": hf_ms},
        ]
        rows += step_alone_rows(b, decoder, inputs)
    rows.append(
        {
            "part": "LM weight bytes (decoder layers + norm + lm_head; tied embedding once)",
            "value": f"{weight_bytes / 1e9:.3f} GB (tied: {tied})",
        }
    )
    if floor_ms:
        rows.append(
            {"part": "bandwidth floor per decode step (weight bytes / copy GB/s)", "ms": floor_ms, "x_floor": 1.0}
        )
    if b.device.type == "cuda":
        rows.append({"part": "CUDA max allocated (MiB)", "value": round(peak_mib(b.device) or 0.0)})
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    note = (
        f"Qwen2.5-VL ({b.scale.name}) random weights, {params_b:.2f}B parameters, {b.dtype}, "
        f"attention '{getattr(model.config, '_attn_implementation', '?')}', built on {b.device} in {b.build_s:.1f} s. "
        f"Prompt {inputs.input_ids.shape[1]} tokens ({image_tokens} image tokens, 640x480 -> "
        f"{mllm.pack(b.image).resized_hw}). Tokenizer: LENS-tiny word level ({len(mllm.tokenizer)} tokens; "
        "the system prompt and question frame are single tokens, so the text part is shorter than "
        "with Qwen's tokenizer); the config's image/video/vision_start/vision_end ids are its ids, the "
        "vocabulary stays 151936. EOS ignored: loop engine with eos_ids emptied, HF with "
        "min_new_tokens. Greedy, no drafted tokens. Decode per token = (N-token run - 1-token run) / (N - 1); "
        "x_floor = that / the bandwidth floor (every LM weight read once per token at the measured copy rate). "
        "The static-cache rows use lens_ros.model.static_decode (GenerationSettings.static_cache / cuda_graph); "
        "without CUDA the graph row runs the static step eagerly, as its graph status says."
    )
    return {"note": note, "columns": ["part", "ms", "x_floor", "value"], "rows": rows}


def step_alone_rows(b: Bench, decoder, inputs) -> list[dict]:
    """One decode step without the loop around it: the decoder layers on the static cache, then lm_head + argmax.

    The loop adds the embedding lookup, the token choice and one host read per token (end
    tokens, streaming); these rows say how much of a token's time is the step itself.
    """
    from lens_ros.model.decoding import GenerationSettings

    rows = []
    for name, graph in (("static cache", False), ("static cache + CUDA graph", True)):
        step = decoder.decode_step(GenerationSettings(static_cache=True, cuda_graph=graph))
        _, cache, next_pos = decoder._prefill(inputs)
        cache = step.begin(cache, inputs.attention_mask, 1)
        length = cache.length
        embeds = decoder.mllm.model.model.get_input_embeddings()(inputs.input_ids[:, -1:])
        positions = next_pos[0]

        def one_step(step=step, cache=cache, embeds=embeds, positions=positions, length=length):
            cache.length = length  # the same slot every time
            return step.step(embeds, positions, cache)

        ms = median_ms(one_step, b.repeats(20, 5), b.device, warmup=2)
        status = f"graph: {step.graph_status}" if graph else ""
        rows.append({"part": f"one decoder step alone, {name}", "ms": ms, "value": status})
    hidden = one_step()
    lm_head = decoder.mllm.model.lm_head
    head_ms = median_ms(lambda: lm_head(hidden[:, -1]).float().argmax(-1), b.repeats(20, 5), b.device, warmup=2)
    rows.append({"part": "lm_head + argmax alone (one token)", "ms": head_ms})
    return rows


def sam_section(b: Bench) -> dict:
    seg = b.segmenter()
    encoder = seg.sam.image_encoder
    size = seg.image_size
    repeats = b.repeats(10, 3)
    x = torch.randn(1, 3, size, size, device=b.device)
    rows = []
    with torch.no_grad():
        log("sam: image encoder fp32")
        rows.append(
            {"part": f"image encoder {size}x{size} fp32", "ms": median_ms(lambda: encoder(x), repeats, b.device)}
        )
        if b.device.type == "cuda":
            previous = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")  # TF32 matmuls
            try:
                tf32_ms = median_ms(lambda: encoder(x), repeats, b.device)
            finally:
                torch.set_float32_matmul_precision(previous)
            rows.append({"part": f"image encoder {size}x{size} fp32, TF32 matmul", "ms": tf32_ms})
        emb = seg.encode(b.image)  # float32 embedding for the decoder rows
        log("sam: image encoder bf16 (Segmenter.cast)")
        seg.cast(torch.bfloat16)
        x16 = x.to(torch.bfloat16)
        rows.append(
            {"part": f"image encoder {size}x{size} bf16", "ms": median_ms(lambda: encoder(x16), repeats, b.device)}
        )
        rows.append(
            {
                "part": "Segmenter.encode bf16 (640x480 frame: resize + normalise on the CPU, copy, encoder)",
                "ms": median_ms(lambda: seg.encode(b.image), repeats, b.device),
            }
        )
        log("sam: prompt encoder + mask decoder (box)")
        box = torch.tensor([BOX_XYXY], device=b.device)
        model_box = seg.model_boxes(box, IMAGE_HW)
        image_embed = emb.features["image_embed"]

        def raw_decode():
            sparse, dense = seg.sam.prompt_encoder(points=None, boxes=model_box, masks=None)
            return seg.sam.mask_decoder(
                image_embeddings=image_embed,
                image_pe=seg.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )

        rows.append(
            {
                "part": "prompt encoder + mask decoder, box, fp32 (SAM modules)",
                "ms": median_ms(raw_decode, repeats, b.device),
            }
        )
        rows.append(
            {
                "part": "Segmenter.decode, box, fp32 (+ upscale to 640x480)",
                "ms": median_ms(lambda: seg.decode(emb, boxes=box), repeats, b.device),
            }
        )
    if b.device.type == "cuda":
        rows.append({"part": "CUDA max allocated (MiB)", "value": round(peak_mib(b.device) or 0.0)})
    params_m = sum(p.numel() for p in seg.parameters()) / 1e6
    note = (
        f"SAM ({'vit_h, sam_model_registry' if b.scale.name == 'real' else 'tiny'}) random weights, "
        f"{params_m:.4g}M parameters. Encoder rows: a random (1, 3, {size}, {size}) input. bf16 is the "
        "project's Segmenter.cast (encoder weights in bf16, prompt encoder + decoder float32)."
    )
    return {"note": note, "columns": ["part", "ms", "value"], "rows": rows}


def pipeline_section(b: Bench) -> dict:
    """Pipeline.segment end to end, every timed call starting from the same drafter state."""
    from lens_ros.model.context_module import ContextModuleConfig
    from lens_ros.model.decoding import GenerationSettings
    from lens_ros.model.lens import LensConfig, LensModel
    from lens_ros.model.pipeline import Pipeline, PipelineConfig
    from lens_ros.model.speculative import NgramDrafter

    mllm = b.mllm()
    seg = b.segmenter()
    config = LensConfig(
        qwen=mllm.model.config.to_dict(),
        image=mllm.image_config,
        context=ContextModuleConfig(
            hidden_size=mllm.hidden_size, out_dim=seg.prompt_dim, connector_heads=b.scale.context_heads
        ),
        segmenter_kind="sam",
        segmenter=seg.config.to_dict(),
        max_new_tokens=NEW_TOKENS,
    )
    with torch.device(b.device):  # the context module (~0.5B parameters at real size)
        lens = LensModel(config, mllm.tokenizer, qwen_model=mllm.model, segmenter=seg)
    lens.mllm.eos_ids = []  # a new MLLM wrapper: exactly NEW_TOKENS tokens here too
    pipe = Pipeline(lens, device=b.device, dtype=b.dtype, config=PipelineConfig(max_new_tokens=NEW_TOKENS))
    repeats = b.repeats(3, 2)
    rows = []
    # Each call starts from a drafter state set here, never from what the previous call left:
    # "first answer" (an empty drafter) and "repeated answer" (the drafter has seen this answer once).
    # Decode steps: the dynamic cache, and the static cache + CUDA graph (on a CPU: the static
    # cache eagerly); what this measures decides whether "auto" picks the graph on CUDA.
    states = (("first answer (empty drafter)", False), ("repeated answer (drafter saw it once)", True))
    modes = ("dynamic", "graph" if b.device.type == "cuda" else "static")
    for (name, primed), decode in ((state, decode) for decode in modes for state in states):
        log(f"pipeline: Pipeline.segment, decode {decode}, {name}")
        pipe.config = pipe.config.replace(decode=decode)
        timings = []
        for i in range(repeats + 1):  # the first call is a warm-up
            lens.decoder.drafter = NgramDrafter()
            if primed:
                pipe.segment(b.image, INSTRUCTION)
            pipe.clear_cache()  # a new frame for the encoder every time
            result, _ = pipe.segment(b.image, INSTRUCTION)
            if i:
                timings.append(result.timings)

        def med(field: str, timings=timings) -> float:
            return statistics.median(getattr(t, field) for t in timings)

        rows.append(
            {
                "decode": decode,
                "mode": name,
                "total_ms": med("total_ms"),
                "generate_ms": med("generate_ms"),
                "tokens": med("num_generated_tokens"),
                "context_ms": med("context_ms"),
                "encoder_ms": med("encoder_ms"),
                "decoder_ms": med("decoder_ms"),
            }
        )
    if b.device.type == "cuda":
        rows[-1]["cuda_max_alloc_mib"] = round(peak_mib(b.device) or 0.0)
    note = (
        "The project's code path: Pipeline.segment on a LensModel assembled from the in-memory Qwen2.5-VL, "
        f"SAM and a random ContextModule, {b.dtype}, {NEW_TOKENS} generated tokens (EOS disabled), embedding "
        "cache cleared before each timed call. Every timed call starts from a drafter state set for it "
        "(empty, or after one call with the same answer), so the two rows differ only by that state. "
        "decode: PipelineConfig.decode (dynamic: the growing KV cache; static: lens_ros.model.static_decode; "
        "graph: static + CUDA graph, what 'auto' picks on CUDA). total_ms is instruction -> first mask."
    )
    if b.device.type == "cuda":
        graph = lens.decoder.decode_step(GenerationSettings(static_cache=True, cuda_graph=True))
        note += f" Graph status after the run: {graph.graph_status}."
    return {
        "note": note,
        "columns": [
            "decode",
            "mode",
            "total_ms",
            "generate_ms",
            "tokens",
            "context_ms",
            "encoder_ms",
            "decoder_ms",
            "cuda_max_alloc_mib",
        ],
        "rows": rows,
    }


def onnx_section(b: Bench) -> dict:
    """The project's ONNX mask decoder on onnxruntime vs torch (box prompt, float32)."""
    import onnxruntime as ort

    from lens_ros.model.onnx_backend import OnnxSegmenter

    providers = ort.get_available_providers()
    cuda_provider = "CUDAExecutionProvider" in providers
    if b.device.type == "cuda" and not cuda_provider:
        return {
            "note": (
                f"NOT MEASURED: onnxruntime {ort.__version__} here has no CUDAExecutionProvider (providers: "
                f"{providers}), i.e. it is the CPU build. Install onnxruntime-gpu (tools/gpu_check.sh installs "
                "it from a wheel in .whl/ when one is there) to measure the CUDA provider."
            ),
            "columns": ["provider", "status"],
            "rows": [{"provider": "CUDAExecutionProvider", "status": "missing: not measured"}],
        }
    seg = b.segmenter()
    repeats = b.repeats(10, 3)
    box = torch.tensor([BOX_XYXY], device=b.device)
    with torch.no_grad():
        emb = seg.encode(b.image).to(b.device, torch.float32)
        log("onnxruntime: exporting the mask decoder")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as onnx_dir:
            ort_seg = OnnxSegmenter.from_segmenter(seg, onnx_dir, device=b.device, export_encoder=False)
            export_s = time.perf_counter() - start
            torch_ms = median_ms(lambda: seg.decode(emb, boxes=box), repeats, b.device)
            ort_ms = median_ms(lambda: ort_seg.decode(emb, boxes=box), repeats, b.device)
    where = (
        "CUDA run with the CUDA provider"
        if b.device.type == "cuda"
        else f"CPU run: the CPU provider (CUDAExecutionProvider {'present' if cuda_provider else 'missing'} here)"
    )
    note = (
        f"{where}. onnxruntime {ort.__version__}, session providers {ort_seg.providers}; export (float32 CPU copy, "
        f"includes one CPU encoder pass for the trace) {export_s:.1f} s. Both rows are Segmenter.decode with a "
        "box prompt, upscaling included; the ORT path copies the embedding to host numpy on every call, "
        "as OnnxSegmenter does."
    )
    return {
        "note": note,
        "columns": ["decoder", "ms", "ratio_vs_torch"],
        "rows": [
            {"decoder": "torch, fp32", "ms": torch_ms},
            {"decoder": "onnxruntime", "ms": ort_ms, "ratio_vs_torch": torch_ms / ort_ms},
        ],
    }


SECTIONS: dict[str, Callable[[Bench], dict]] = {
    "1. memory bandwidth": bandwidth,
    "2. Qwen2.5-VL-3B in MLLM": mllm_section,
    "3. SAM ViT-H": sam_section,
    "4. segment end to end": pipeline_section,
    "5. onnxruntime mask decoder": onnx_section,
}


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import RESULTS_DIR, write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--scale", choices=list(SCALES), default="real", help="tiny: a CPU smoke test")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    b = Bench(SCALES[args.scale], device, dtype, args.quick)
    mode = "gpu" + ("-quick" if args.quick else "") + ("" if args.scale == "real" else f"-{args.scale}")
    torch.manual_seed(0)
    t_start = time.monotonic()
    results: dict[str, dict] = {"environment": environment(b)}
    failed = 0
    json_path = md_path = None
    for name, section in SECTIONS.items():
        log(f"== {name}")
        start = time.monotonic()
        try:
            results[name] = section(b)
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' numbers
            failed += 1
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        results[name]["seconds"] = round(time.monotonic() - start, 1)
        log(f"   {results[name]['seconds']} s")
        if section is pipeline_section:
            b.release_mllm()  # the last section that needs the 3B model
        else:
            free_memory(device)
        results["environment"]["note"] = f"total {time.monotonic() - t_start:.1f} s so far; {failed} section(s) failed"
        try:  # after every section: a run cut short still leaves its numbers
            json_path, md_path = write_results(results, mode, args.out)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    if md_path is None:
        log("no results file could be written")
        return 1
    print(md_path.read_text(), flush=True)
    log(f"results: {json_path} and {md_path}; total {time.monotonic() - t_start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
