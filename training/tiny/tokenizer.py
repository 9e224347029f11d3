"""The tokenizer of LENS-tiny: word level, built from the synthetic world's vocabulary.

It is ``lens_ros.model.tiny.build_word_tokenizer`` (Qwen's chat special tokens, think /
answer tags, punctuation, numbers 0..NUM_MAX as single tokens) given every word the
world's expressions and rationales can use, plus *phrase tokens*: the fixed sentences of
the chat format (the system prompt and the parts of the LENS questions around the
expression) are single vocabulary entries, as a BPE trained on this corpus would merge
them. The model reads exactly the chat text of the real LENS prompts, in ~70 fewer
tokens per sample, which is most of a 2-core CPU's training time.

Saved as tokenizer.json + tokenizer_config.json; loads with ``AutoTokenizer`` /
``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

from pathlib import Path

from lens_ros.model import prompts
from lens_ros.model.tiny import build_word_tokenizer
from lens_ros.world.language import vocabulary
from lens_training.tiny.config import NUM_MAX


def phrase_tokens() -> list[str]:
    """Fixed sentences of the chat format, each becoming one token."""
    cot_prefix, cot_suffix = prompts.COT_QUESTION_TEMPLATE.split("{expression}")
    plain_prefix, plain_suffix = prompts.QUESTION_TEMPLATE.split("{expression}")
    return [prompts.SYSTEM_PROMPT, cot_prefix, cot_suffix, plain_prefix.rstrip(), plain_suffix.lstrip()]


def build_tiny_tokenizer():
    """-> PreTrainedTokenizerFast for LENS-tiny."""
    from tokenizers import AddedToken

    tok = build_word_tokenizer(tuple(vocabulary()), max_number=NUM_MAX)
    tok.add_tokens([AddedToken(p, normalized=False, single_word=False) for p in phrase_tokens()])
    return tok


def save_tiny_tokenizer(out_dir: str | Path):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    tok.save_pretrained(str(out))
    return tok
