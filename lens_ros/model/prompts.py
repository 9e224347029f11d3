"""Prompts of the LENS MLLM and parsing of its answers.

The texts follow the published LENS setup (Qwen2.5-VL chat format):

- system prompt "You are a helpful assistant.";
- non-CoT question "Output the bounding box of the {expression} in the image.";
- CoT question asking to compare candidates, reason in ``<think>...</think>`` and give
  a JSON box in ``<answer>...</answer>``;
- teacher-forced stage-1 answer
  ``<|object_ref_start|>expr<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``.

Boxes are absolute pixels in the MLLM's resized image (see ``vision_input.smart_resize``).

``parse_answer`` never evaluates model output: it uses bounded regular expressions on a
length-capped copy of the text and returns a ``ParsedAnswer`` saying what went wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lens_ros.model.limits import MAX_ANSWER_CHARS, MAX_INSTRUCTION_CHARS
from lens_ros.model.types import BadInputError

# The system prompt as published; the released checkpoints were trained with a trailing
# space after the period (their chat template inserts the text verbatim), which the
# lens-3b presets select through ``LENS_RELEASE_SYSTEM_PROMPT``.
SYSTEM_PROMPT = "You are a helpful assistant."
LENS_RELEASE_SYSTEM_PROMPT = "You are a helpful assistant. "

QUESTION_TEMPLATE = "Output the bounding box of the {expression} in the image."

# The CoT question the released LENS_ReasonSeg_CoT model was trained with (it is data the
# weights depend on, so it is kept word for word, including the missing spaces).
COT_QUESTION_TEMPLATE = (
    'Locate "{expression}", report the bbox coordinates in JSON format.'
    "Compare the difference between objects and find the most closely matched one."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox inside the interested object in JSON format."
    "i.e., <think>thinking process here</think>"
    "<answer>answer here</answer>"
)

# Special tokens of the Qwen2.5-VL vocabulary used by the chat format.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
OBJECT_REF_START = "<|object_ref_start|>"
OBJECT_REF_END = "<|object_ref_end|>"
BOX_START = "<|box_start|>"
BOX_END = "<|box_end|>"
THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"

# Every special token a tokenizer for this prompt format must know as one piece.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    IMAGE_PAD,
    OBJECT_REF_START,
    OBJECT_REF_END,
    BOX_START,
    BOX_END,
)


_SPECIAL_PATTERN = re.compile(r"<\|[a-z_]{1,32}\|>")


def clean_instruction(instruction: str, max_chars: int = MAX_INSTRUCTION_CHARS) -> str:
    """Validate a user instruction and make it safe to put inside the chat prompt.

    Control and other non-printable characters become spaces, chat-control tokens
    (``<|im_end|>`` etc.) are removed so an instruction cannot close the user turn, and
    whitespace is collapsed. Raises ``BadInputError`` when the instruction is not a string,
    is empty, or is longer than ``max_chars`` (at most ``MAX_INSTRUCTION_CHARS``).
    """
    if not isinstance(instruction, str):
        raise BadInputError(f"instruction must be a string, got {type(instruction).__name__}")
    max_chars = min(max_chars, MAX_INSTRUCTION_CHARS)
    if len(instruction) > 4 * max_chars:  # refuse before scanning megabytes
        raise BadInputError(f"instruction of {len(instruction)} characters exceeds the limit of {max_chars}")
    text = "".join(c if c.isprintable() else " " for c in instruction)
    text = " ".join(_SPECIAL_PATTERN.sub(" ", text).split())
    if not text:
        raise BadInputError("empty instruction")
    if len(text) > max_chars:
        raise BadInputError(f"instruction of {len(text)} characters exceeds the limit of {max_chars}")
    return text


def build_question(expression: str, *, cot: bool = False, final_period: bool = True) -> str:
    """The user question for one referring expression (no image tokens).

    ``final_period``: add a "." when the question does not end with one (only the CoT
    template ends otherwise, with "</answer>"). Models trained by lens_ros (lens-tiny and its
    bundles) were asked with it; the released LENS checkpoints were trained and evaluated
    with the templates as they are (``LensConfig.question_final_period``).
    """
    template = COT_QUESTION_TEMPLATE if cot else QUESTION_TEMPLATE
    question = template.format(expression=expression)
    if final_period and not question.endswith("."):
        question += "."
    return question


def render_chat(
    question: str,
    *,
    num_image_tokens: int = 1,
    system: str = SYSTEM_PROMPT,
    add_generation_prompt: bool = True,
) -> str:
    """Render the Qwen2.5-VL chat text for one image + question.

    ``num_image_tokens`` ``<|image_pad|>`` tokens are written between the vision
    markers: pass the real count (``grid_t*grid_h*grid_w // merge_size**2``) when
    tokenizing yourself, or 1 when a Qwen processor expands the pad itself. The result
    equals Qwen2.5-VL's own chat template for a system message, a user message with one
    image followed by text, and the generation prompt.
    """
    if num_image_tokens < 1:
        raise ValueError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
    text = (
        f"{IM_START}system\n{system}{IM_END}\n"
        f"{IM_START}user\n{VISION_START}{IMAGE_PAD * num_image_tokens}{VISION_END}{question}{IM_END}\n"
    )
    if add_generation_prompt:
        text += f"{IM_START}assistant\n"
    return text


def _fmt_coord(value: float) -> str:
    return str(int(round(value)))


def format_box_answer(expression: str, box: tuple[float, float, float, float]) -> str:
    """Teacher-forced non-CoT answer (stage 1): Qwen's grounding format, integer pixels.

    ``<|object_ref_start|>expr.<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
    (the official stage 1 ends the expression with a period). Close the assistant turn
    with ``answer_suffix()`` when teacher forcing.
    """
    x1, y1, x2, y2 = (_fmt_coord(v) for v in box)
    if not expression.endswith("."):
        expression += "."
    return f"{OBJECT_REF_START}{expression}{OBJECT_REF_END}{BOX_START}({x1},{y1}),({x2},{y2}){BOX_END}"


def format_cot_answer(think: str, box: tuple[float, float, float, float]) -> str:
    """Teacher-forced CoT answer: ``<think>...</think><answer>[x1,y1,x2,y2]</answer>``.

    The box is a JSON array of integer pixels, as the CoT question asks.
    """
    coords = ",".join(_fmt_coord(v) for v in box)
    return f"{THINK_START}{think}{THINK_END}{ANSWER_START}[{coords}]{ANSWER_END}"


def answer_suffix() -> str:
    """Text closing the assistant turn after an answer (appended in teacher forcing)."""
    return IM_END


@dataclass
class ParsedAnswer:
    """What could be read from one MLLM completion.

    think: text inside the first ``<think>...</think>`` ("" when absent).
    answer: text inside the first ``<answer>...</answer>``, else the completion without
        its think part.
    box: the first box found in ``answer`` as (x1, y1, x2, y2) floats, or None.
    format_ok: the completion is exactly ``<think>...</think><answer>...</answer>``
        (whitespace allowed around the parts): the CoT format reward's condition.
    error: why no box was found ("" when ``box`` is not None).
    """

    think: str
    answer: str
    box: tuple[float, float, float, float] | None
    format_ok: bool
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.box is not None


# Bounded pieces keep the regex engine linear on hostile inputs.
_NUM = r"(-?\d{1,9}(?:\.\d{1,9})?)"
_SEP = r"\s{0,8},\s{0,8}"
_BOX_PATTERNS = (
    re.compile(r"\[\s{0,8}" + _NUM + _SEP + _NUM + _SEP + _NUM + _SEP + _NUM + r"\s{0,8}\]"),
    re.compile(r"\(\s{0,8}" + _NUM + _SEP + _NUM + _SEP + _NUM + _SEP + _NUM + r"\s{0,8}\)"),
    re.compile(
        r"\(\s{0,8}" + _NUM + _SEP + _NUM + r"\s{0,8}\)" + _SEP + r"\(\s{0,8}" + _NUM + _SEP + _NUM + r"\s{0,8}\)"
    ),
)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
# Chat tokens that may trail a completion decoded without skipping special tokens.
_TRAILING_TOKENS = (IM_END, "<|endoftext|>")


def _strip_trailing(text: str) -> str:
    """``text`` without its trailing whitespace and chat tokens.

    A loop, not a regex: an end-anchored regex for this backtracks quadratically
    (5 s for 16000 spaces followed by one letter).
    """
    while True:
        text = text.rstrip()
        token = next((t for t in _TRAILING_TOKENS if text.endswith(t)), None)
        if token is None:
            return text
        text = text[: -len(token)]


def find_box(text: str) -> tuple[float, float, float, float] | None:
    """The earliest ``[a,b,c,d]``, ``(a,b,c,d)`` or ``(a,b),(c,d)`` in ``text``, or None."""
    best: re.Match[str] | None = None
    for pattern in _BOX_PATTERNS:
        match = pattern.search(text)
        if match is not None and (best is None or match.start() < best.start()):
            best = match
    if best is None:
        return None
    return tuple(float(g) for g in best.groups())  # type: ignore[return-value]


def parse_answer(text: str) -> ParsedAnswer:
    """Read think text, answer text and the box from one completion. Never raises."""
    if not isinstance(text, str):
        return ParsedAnswer("", "", None, False, f"completion is {type(text).__name__}, not text")
    error_prefix = ""
    if len(text) > MAX_ANSWER_CHARS:
        text = text[:MAX_ANSWER_CHARS]
        error_prefix = f"completion cut to {MAX_ANSWER_CHARS} characters; "
    body = _strip_trailing(text)
    format_ok = _FORMAT.fullmatch(body) is not None
    think_match = _THINK.search(body)
    think = think_match.group(1).strip() if think_match else ""
    answer_match = _ANSWER.search(body)
    if answer_match is not None:
        answer = answer_match.group(1).strip()
    elif think_match is not None:
        answer = (body[: think_match.start()] + body[think_match.end() :]).strip()
    else:
        answer = body.strip()
    if not answer:
        return ParsedAnswer(think, answer, None, format_ok, error_prefix + "empty answer")
    box = find_box(answer)
    if box is None:
        return ParsedAnswer(think, answer, None, format_ok, error_prefix + "no box found in the answer")
    if not all(math.isfinite(v) for v in box):
        return ParsedAnswer(think, answer, None, format_ok, error_prefix + "box has non-finite numbers")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return ParsedAnswer(think, answer, None, format_ok, error_prefix + f"degenerate box {list(box)}")
    return ParsedAnswer(think, answer, box, format_ok, "")


def partial_rationale(text: str) -> str:
    """The rationale in a completion that may still be being written: the text after
    ``<think>`` up to ``</think>`` (or to the end while it is open); "" before it starts.
    A model that writes no ``<think>`` (non-CoT) streams nothing."""
    start = text.find(THINK_START)
    if start < 0:
        return ""
    body = text[start + len(THINK_START) :]
    end = body.find(THINK_END)
    return (body if end < 0 else body[:end]).strip()
