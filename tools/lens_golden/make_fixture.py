"""Golden fixture of hustvl/LENS's own inference, for test/model/test_lens_official_golden.py.

Builds a tiny random checkpoint in the released format (``SAMR1ForConditionalGeneration_qwen2p5``:
a scaled-down Qwen2.5-VL + LENS heads + the smallest SAM 2 Hiera this script can build, saved
by the official class's ``save_pretrained`` with a Qwen2.5-VL processor, chat template and
generation config), runs the official inference on one image, and writes what it produced:

    <out>/checkpoint/            config.json, generation_config.json, model.safetensors.xz,
                                 tokenizer + processor files (the release's file set)
    <out>/scene.png              the image
    <out>/cases.json             per case: question, image rule, prompt and completion ids,
                                 the official answer text, the SAM 2 configuration
    <out>/expected.safetensors   per case: the 64 query hidden states, the prompt token, the
                                 low-res mask logits
    <out>/<case>_mask.png        per case: the official mask at the image's size

Cases:
    refcoco   ``eval/evaluate_res2.py``: non-CoT question, smart_resize to 1M pixels,
              greedy ``generate(max_length=768)``, then the mask pass (``use_learnable_query``)
    forced    the same prompt with a teacher-forced answer (the stage-1 training forward)
    cot       ``eval/evaluate_reasonseg.py --cot``: CoT question, longest side resized to 640

The weights are random but low-entropy (each tensor is a few multiples of a power of two
near its initial scale, so bfloat16 holds them exactly and xz packs them ~8x): the fixture
stays under 5 MB.

Run in a separate environment with the official pins (transformers 4.51.3, a CPU torch,
hydra-core, iopath, opencv-python-headless, pillow), never the repository's venv:

    python3.11 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch transformers==4.51.3 hydra-core iopath \
        opencv-python-headless pillow safetensors
    # a checkout of hustvl/LENS in /tmp/LENS
    /tmp/golden-venv/bin/python tools/lens_golden/make_fixture.py --lens-src /tmp/LENS \
        --seed 1 --lens-commit $(git -C /tmp/LENS rev-parse HEAD)

The committed fixture: LENS commit 28cf510, seed 1 (seed 0's random model writes an
``<|image_pad|>`` token into its answer, which the official mask pass refuses).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_TRANSFORMERS = "4.51.3"
NUM_QUERIES = 64
SAM_SIZE = 1024  # the official model hard-codes SAM 2's 1024 px feature sizes
IMAGE_HW = (168, 224)
MAX_LENGTH = 768  # the official evaluations' generate(max_length=...)
SHARP_ATTENTION = 16.0  # scale of the language model's query/key weights over their initial one

# The smallest SAM 2 the official class can carry: Hiera-T's config with a width-16 trunk
# of 5 blocks at the official 1024 px input; memory modules (deleted by the class) shrunk to
# build fast. The same overrides build it from the sam2 wheel's configs/sam2/sam2_hiera_t.yaml.
SAM2_CONFIG_NAME = "sam2_hiera_t.yaml"
SAM2_WHEEL_CONFIG = "configs/sam2/sam2_hiera_t.yaml"
SAM2_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=256",
]

# Qwen2-VL / Qwen2.5-VL chat template (the checkpoints' chat_template.json).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2's pre-tokenizer split (its tokenizer.json), so both transformers versions tokenize alike.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
    "You are a helpful assistant. Output the bounding box of the red mug in the image.",
    'Locate "the cup you could pour coffee into", report the bbox coordinates in JSON format.',
    "Compare the difference between objects and find the most closely matched one.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
    "Output the one bbox inside the interested object in JSON format.",
    "i.e., <think>thinking process here</think><answer>answer here</answer>",
    "the blue block left of the green cylinder, the second cube from the right, a yellow ball",
    '{"bbox_2d": [12, 40, 96, 130]} [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] (10,20),(30,40)',
]
CASES = {
    "refcoco": {"template": "pr1_grounding", "expression": "red mug", "image_rule": "smart_resize_1m"},
    "forced": {
        "template": "pr1_grounding",
        "expression": "red mug",
        "image_rule": "smart_resize_1m",
        "forced_answer": "<|object_ref_start|>red mug.<|object_ref_end|><|box_start|>(62,40),(150,120)<|box_end|>",
    },
    "cot": {"template": "samr1_v4", "expression": "the cup you could pour coffee into", "image_rule": "longest_640"},
}


def check_environment(lens_src: Path) -> None:
    import transformers

    if transformers.__version__ != OFFICIAL_TRANSFORMERS:
        sys.exit(
            f"transformers {transformers.__version__} found; LENS pins {OFFICIAL_TRANSFORMERS}: "
            "put the official environment first on PYTHONPATH (see README.md)"
        )
    if not (lens_src / "src" / "open_r1" / "trainer" / "samr1.py").is_file():
        sys.exit(f"{lens_src}: not a hustvl/LENS checkout")
    os.chdir(lens_src)  # the vendored SAM 2 finds its hydra configs relative to the checkout
    sys.path.insert(0, str(lens_src))


def build_tokenizer():
    """A small byte-level BPE with Qwen2's pre-tokenizer and chat special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(CORPUS * 4, trainer)
    tok = Qwen2TokenizerFast(tokenizer_object=core, unk_token=None, bos_token=None)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    return tok


def build_processor(tokenizer):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def patch_sam2_size() -> None:
    """The official class builds ``sam2_hiera_l.yaml``; build the tiny Hiera instead."""
    import src.open_r1.trainer.samr1 as samr1
    from src.segment_anything_2.sam2.build_sam import build_sam2

    def build_tiny(config_file, *args, **kwargs):
        return build_sam2(SAM2_CONFIG_NAME, *args, hydra_overrides_extra=SAM2_OVERRIDES, **kwargs)

    samr1.build_sam2 = build_tiny


def tiny_config(tokenizer):
    from src.open_r1.trainer.samr1 import SAMR1Config

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return SAMR1Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        # untied (as Qwen2.5-VL-7B): with tied embeddings a random network predicts the token it
        # was given, and its greedy answer is one token repeated
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_chans": 3,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "out_hidden_size": 64,
            "hidden_act": "silu",
            "tokens_per_second": 2,
        },
        num_of_query=NUM_QUERIES,
        if_use_qwen_connector=True,
        architectures=["SAMR1ForConditionalGeneration_qwen2p5"],
    )


@torch.no_grad()
def make_low_entropy(model: torch.nn.Module, seed: int) -> None:
    """Each non-constant float tensor -> q * 2^k, q in {-3..3} ~ round(N(0, 1)), 2^k near its std.

    Exact in bfloat16; gives the random network the scale of its own initialisation, except
    the language model's query and key projections, 16x larger: at the initial scale every
    attention is nearly uniform, so rotary positions (what the mask pass changes) hardly matter.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if not tensor.is_floating_point() or tensor.numel() < 2:
            continue
        std = float(tensor.float().std())
        if std == 0.0 or not np.isfinite(std):
            continue
        scale = 2.0 ** round(np.log2(std))
        if name.startswith("model.layers.") and name.endswith(("q_proj.weight", "k_proj.weight")):
            scale *= SHARP_ATTENTION
        q = torch.randn(tensor.shape, generator=gen).round().clamp(-3, 3)
        tensor.copy_(q * scale)


def make_image() -> np.ndarray:
    """A 168x224 tabletop-like picture: textured background, a few coloured shapes."""
    rng = np.random.default_rng(7)
    h, w = IMAGE_HW
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([60 + xx * 0.3, 70 + yy * 0.4, 90 + 0 * xx], -1) + rng.normal(0, 6, (h, w, 3))
    image[40:120, 62:150] = (200, 40, 35)  # red "mug"
    image[(yy - 60) ** 2 + (xx - 190) ** 2 < 22**2] = (40, 160, 60)  # green disc
    image[120:160, 10:60] = (40, 60, 200)  # blue block
    return np.clip(image, 0, 255).astype(np.uint8)


def official_question(template: str, expression: str) -> str:
    from src.open_r1.constants import question_template_registry

    return question_template_registry[template].format(question=expression)


def llm_image(image, rule: str):
    """The MLLM's image as the official evaluation scripts prepare it."""
    from PIL import Image

    # qwen_vl_utils.smart_resize (what the scripts import) is transformers' rule with the same
    # factor and bounds; qwen_vl_utils itself imports torchvision, which the CPU environment lacks
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    pil = Image.fromarray(image)
    if rule == "smart_resize_1m":  # evaluate_res2.ReferSegEvaluationSet
        w, h = pil.size
        rh, rw = smart_resize(h, w, 28, min_pixels=4 * 28 * 28, max_pixels=1000000)
        return pil.resize((rw, rh))
    if rule == "longest_640":  # evaluate_reasonseg.resize_longest(image, 640)
        w, h = pil.size
        scale = 640 / w if w > h else 640 / h
        return pil.resize((int(w * scale), int(h * scale)))
    raise ValueError(rule)


def sam_image(image, rule: str) -> torch.Tensor:
    """The SAM 2 input as the official evaluation scripts prepare it."""
    from PIL import Image

    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    if rule == "longest_640":  # evaluate_reasonseg: cv2.resize of the original
        import cv2

        resized = cv2.resize(image, (SAM_SIZE, SAM_SIZE))
    else:  # evaluate_res2: torchvision's resize of a PIL image, which is PIL's bilinear resize
        resized = np.array(Image.fromarray(image).resize((SAM_SIZE, SAM_SIZE), Image.BILINEAR))
    return (torch.from_numpy(resized).permute(2, 0, 1).contiguous() - mean) / std


@torch.no_grad()
def run_case(model, processor, image: np.ndarray, name: str, spec: dict) -> tuple[dict, dict, np.ndarray]:
    """One official inference: (case record, tensors, mask)."""
    question = official_question(spec["template"], spec["expression"])
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    forced = spec.get("forced_answer")
    if forced is not None:
        text = text + forced + "<|im_end|>"
    inputs = processor(text=[text], images=[llm_image(image, spec["image_rule"])], padding=True, return_tensors="pt")
    pad_id = processor.tokenizer.pad_token_id
    if forced is None:  # evaluate_single: greedy generation, then the mask pass on its output
        sequences = model.generate(max_length=MAX_LENGTH, use_cache=True, do_sample=False, **inputs)
        prompt_len = inputs["input_ids"].shape[1]
        # the same decoding without the checkpoint's repetition penalty: shows whether it matters here
        plain = model.generate(max_length=MAX_LENGTH, use_cache=True, do_sample=False, repetition_penalty=1.0, **inputs)
        penalty_changes_answer = plain.shape != sequences.shape or not bool((plain == sequences).all())
    else:
        sequences = inputs["input_ids"]
        prompt_text_len = processor(
            text=[text[: -len(forced + "<|im_end|>")]],
            images=[llm_image(image, spec["image_rule"])],
            return_tensors="pt",
        )["input_ids"].shape[1]
        prompt_len = prompt_text_len
        penalty_changes_answer = None
    attention_mask = torch.ones_like(sequences, dtype=torch.int64)
    attention_mask[sequences == pad_id] = 0
    inputs.update({"input_ids": sequences, "attention_mask": attention_mask})
    inputs.update({"sam_images": sam_image(image, spec["image_rule"]).unsqueeze(0)})
    outputs, low_res = model(output_hidden_states=True, use_learnable_query=True, **inputs)
    hidden = outputs.hidden_states[-1]
    prompt_token = model.get_sam_embedding(hidden)
    full = model.postprocess_masks(low_res[0], orig_hw=image.shape[:2])
    mask = (full[:, 0] > 0)[0].numpy()
    ids = sequences[0].tolist()
    completion = ids[prompt_len:]
    eos = set(model.generation_config.eos_token_id)
    record = {
        **spec,
        "question": question,
        "system_prompt": SYSTEM_PROMPT,
        "prompt_ids": ids[:prompt_len],
        "completion_ids": completion,
        "answer_text": processor.tokenizer.decode(completion, skip_special_tokens=True),
        "ended_with_eos": bool(completion) and completion[-1] in eos,
        "repetition_penalty_changes_answer": penalty_changes_answer,
        "max_length": MAX_LENGTH,
        "image_grid_thw": inputs["image_grid_thw"][0].tolist(),
        "mask_png": f"{name}_mask.png",
        "mask_fraction": float(mask.mean()),
    }
    tensors = {
        f"{name}.query_hidden": hidden[0, -NUM_QUERIES:].contiguous(),
        f"{name}.prompt_token": prompt_token[0].contiguous(),
        f"{name}.low_res_logits": low_res[0][0].contiguous(),
    }
    return record, tensors, mask


SYSTEM_PROMPT = ""  # set from the official registry in main()


def save_checkpoint(model, processor, out: Path) -> None:
    """The release's file set; the safetensors weights xz-compressed (bfloat16, as released)."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=True,
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id],
        repetition_penalty=1.05,
        temperature=1e-6,
    )
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    model.to(torch.float32)
    processor.save_pretrained(str(out))
    weights = out / "model.safetensors"
    (out / "model.safetensors.xz").write_bytes(lzma.compress(weights.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
    weights.unlink()


def load_checkpoint(out: Path):
    """Load the saved checkpoint back through the official class (fp32, as on the CPU)."""
    from src.open_r1.trainer.samr1 import SAMR1ForConditionalGeneration_qwen2p5
    from transformers import AutoProcessor

    weights = out / "model.safetensors"
    weights.write_bytes(lzma.decompress((out / "model.safetensors.xz").read_bytes()))
    try:
        model = SAMR1ForConditionalGeneration_qwen2p5.from_pretrained(
            str(out), torch_dtype=torch.float32, attn_implementation="sdpa"
        ).eval()
        processor = AutoProcessor.from_pretrained(str(out))
    finally:
        weights.unlink()
    return model, processor


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main() -> None:
    global SYSTEM_PROMPT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lens-src", type=Path, required=True, help="hustvl/LENS checkout")
    parser.add_argument("--out", type=Path, default=REPO / "test" / "fixtures" / "lens_official")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lens-commit", default="", help="the checkout's commit, recorded in cases.json")
    args = parser.parse_args()
    out = args.out.resolve()
    check_environment(args.lens_src.resolve())
    from src.open_r1.constants import system_prompt_registry

    SYSTEM_PROMPT = system_prompt_registry["default"]
    torch.manual_seed(args.seed)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    patch_sam2_size()
    from src.open_r1.trainer.samr1 import SAMR1ForConditionalGeneration_qwen2p5

    model = SAMR1ForConditionalGeneration_qwen2p5(tiny_config(tokenizer)).eval()
    make_low_entropy(model, args.seed)
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, processor, ckpt)
    model, processor = load_checkpoint(ckpt)  # the fixture comes from the files, as a user loads them

    image = make_image()
    (out / "scene.png").write_bytes(png_bytes(image))
    records, tensors = {}, {}
    for name, spec in CASES.items():
        record, case_tensors, mask = run_case(model, processor, image, name, spec)
        (out / record["mask_png"]).write_bytes(png_bytes(mask.astype(np.uint8) * 255))
        records[name] = record
        tensors.update(case_tensors)
        print(
            f"{name}: {len(record['prompt_ids'])} prompt + {len(record['completion_ids'])} completion tokens "
            f"(eos: {record['ended_with_eos']}), mask {record['mask_fraction']:.3f} of the image; "
            f"answer {record['answer_text'][:60]!r}"
        )
    from safetensors.torch import save_file

    save_file(tensors, str(out / "expected.safetensors"), metadata={"source": "hustvl/LENS official inference"})
    meta = {
        "lens_commit": args.lens_commit or None,
        "transformers": OFFICIAL_TRANSFORMERS,
        "seed": args.seed,
        "num_queries": NUM_QUERIES,
        "sam2": {"official_config": SAM2_CONFIG_NAME, "config_file": SAM2_WHEEL_CONFIG, "overrides": SAM2_OVERRIDES},
        "cases": records,
    }
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"fixture written to {out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
