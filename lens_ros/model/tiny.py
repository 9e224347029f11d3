"""Tiny random LENS models and bundles (tests, smoke runs, starting point of the embedded model).

Everything here uses the real classes (Qwen2_5_VLForConditionalGeneration, segment_anything
/ sam2 modules, ContextModule) scaled down, and a small word-level tokenizer that knows the
chat format's special tokens, so a bundle written by ``build_tiny_random_bundle`` goes
through exactly the loading and inference code of the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lens_ros.model import prompts

# Words the random tokenizer knows besides numbers: the prompt templates plus a small
# scene vocabulary. Out-of-vocabulary words map to [UNK].
_WORDS = (
    "you are a helpful assistant output the bounding box of in image locate report bbox coordinates "
    "json format compare difference between objects and find most closely matched one thinking "
    "process final answer tags inside interested i.e. here system user "
    "red green blue yellow white black orange purple mug cup block cube cylinder sphere ball bottle "
    "bowl left right front behind next to on under biggest smallest second first something that "
    "could you pour coffee into stack it is"
).split()
_PUNCT = tuple(".,:;!?()[]{}\"'-_/")
_CHAT_WORDS = (prompts.THINK_START, prompts.THINK_END, prompts.ANSWER_START, prompts.ANSWER_END)
TINY_MAX_NUMBER = 512


def build_word_tokenizer(extra_words: tuple[str, ...] = (), max_number: int = TINY_MAX_NUMBER):
    """A word-level ``PreTrainedTokenizerFast`` with Qwen's chat special tokens.

    Special tokens get ids 0..9 in ``prompts.SPECIAL_TOKENS`` order; then [UNK], the
    think/answer tags, punctuation, numbers 0..max_number and the words.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in (
        *prompts.SPECIAL_TOKENS,
        "[UNK]",
        *_CHAT_WORDS,
        *_PUNCT,
        *(str(i) for i in range(max_number + 1)),
        *_WORDS,
        *extra_words,
    ):
        vocab.setdefault(tok, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    core.add_special_tokens(list(prompts.SPECIAL_TOKENS))
    core.add_tokens(list(_CHAT_WORDS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token=prompts.IM_END,
        additional_special_tokens=list(prompts.SPECIAL_TOKENS[1:]),
    )
    return tok


def tiny_qwen_config(
    tokenizer,
    *,
    text_hidden: int = 64,
    text_layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 1,
    coord_channels: bool = True,
    patch_size: int = 8,
):
    """A scaled-down Qwen2_5_VLConfig wired to ``tokenizer``'s special-token ids.

    Follows the measured recipe for small towers: explicit ``mrope_section`` summing to
    head_dim/2, full attention in every vision block, a window covering the image.
    """
    from transformers import Qwen2_5_VLConfig

    head_dim = text_hidden // heads
    half = head_dim // 2
    t = half // 4
    mrope = [half - 2 * ((half - t) // 2), (half - t) // 2, (half - t) // 2]
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", prompts.IMAGE_PAD),
            ("video_token_id", prompts.IMAGE_PAD),
            ("vision_start_token_id", prompts.VISION_START),
            ("vision_end_token_id", prompts.VISION_END),
        )
    }
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            tie_word_embeddings=False,
            bos_token_id=ids["vision_start_token_id"],
            eos_token_id=tokenizer.convert_tokens_to_ids(prompts.IM_END),
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=2,
            in_channels=5 if coord_channels else 3,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=1,
            window_size=4096,
            fullatt_block_indexes=list(range(vision_depth)),
            out_hidden_size=text_hidden,
        ),
        **ids,
    )


def build_tiny_random_bundle(
    out_dir: str | Path, seed: int = 0, segmenter: str = "sam", sam2_memory: bool = False
) -> Path:
    """Create a tiny random LensModel + tokenizer and save it as a real bundle in ``out_dir``.

    segmenter: "sam" (segment_anything modules, 128 px) or "sam2" (a tiny Hiera, 256 px);
    sam2_memory: keep SAM 2's video-memory modules (memory tracking).
    Returns the bundle directory. Takes about a second on a CPU.
    """
    from lens_ros.model.bundle import save_bundle

    model, tokenizer, config = build_tiny_random_model(seed=seed, segmenter=segmenter, sam2_memory=sam2_memory)
    return save_bundle(out_dir, model, tokenizer, config)


def build_tiny_random_model(seed: int = 0, segmenter: str = "sam", sam2_memory: bool = False):
    """(LensModel, tokenizer, LensConfig) with random weights; see ``build_tiny_random_bundle``."""
    from lens_ros.model.context_module import ContextModuleConfig
    from lens_ros.model.lens import LensConfig, LensModel
    from lens_ros.model.mllm import ImageConfig
    from lens_ros.model.sam2_backend import SAM2_CONFIGS, TINY_SAM2_OVERRIDES, Sam2Config
    from lens_ros.model.sam_backend import SamConfig

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer()
    qwen = tiny_qwen_config(tokenizer)
    if segmenter == "sam":
        seg_cfg = SamConfig(
            image_size=128,
            encoder_embed_dim=32,
            encoder_depth=1,
            encoder_num_heads=2,
            global_attn_indexes=(0,),
            prompt_embed_dim=32,
            decoder_mlp_dim=64,
            decoder_num_heads=2,
            iou_head_hidden_dim=32,
            window_size=4,
        )
        prompt_dim = 32
    elif segmenter == "sam2":
        seg_cfg = Sam2Config(SAM2_CONFIGS["sam2.1_hiera_t"], TINY_SAM2_OVERRIDES, keep_memory=sam2_memory)
        prompt_dim = 256
    else:
        raise ValueError(f"segmenter must be 'sam' or 'sam2', got {segmenter!r}")
    config = LensConfig(
        qwen=qwen.to_dict(),
        image=ImageConfig(
            patch_size=8,
            merge_size=2,
            temporal_patch_size=1,
            coord_channels=True,
            min_pixels=32 * 32,
            max_pixels=64 * 64,
        ),
        context=ContextModuleConfig(
            hidden_size=qwen.text_config.hidden_size, num_queries=64, out_dim=prompt_dim, connector_heads=4
        ),
        segmenter_kind=segmenter,
        segmenter=seg_cfg.to_dict(),
        max_new_tokens=24,
    )
    model = LensModel(config, tokenizer)
    model.eval()
    return model, tokenizer, config
