"""Coverage-guided (atheris / libFuzzer) fuzz targets for what reads untrusted input.

    python test/reliability/fuzz_targets.py parser -runs=100000 -seed=1
    python test/reliability/fuzz_targets.py image -max_total_time=600 -timeout=2 CORPUS_DIR
    python test/reliability/fuzz_targets.py config --self-check -runs=1000 -artifact_prefix=/tmp/

(CORPUS_DIR: an existing directory where libFuzzer keeps the inputs that found new code;
crash-*/timeout-* files are written to -artifact_prefix, the current directory by default.)

Targets:

- ``parser``: ``parse_answer`` (and ``clean_instruction``) on model completions;
- ``image``: ``image_to_numpy`` on real ``sensor_msgs/Image`` messages, then ``to_rgb8``,
  ``depth_to_metres`` and the ``numpy_to_image`` round trip on what it returns;
- ``config``: ``lens_training.config.load_config`` (YAML file + key=value overrides) and
  ``lens_ros.node_config.read_params_file`` / ``check_value`` on the same file.

A target fails (libFuzzer writes a crash file and exits non-zero) only when an exception
other than the project's typed errors escapes (``parse_answer`` and ``check_value`` may
raise nothing at all), or when a result breaks an invariant (``FuzzInvariantError``).
Everything after the target name is passed to libFuzzer (flags and corpus directories),
except ``--self-check``: it plants a deliberate bug between the project call and the
invariant checks, to show that the harness reports one.
"""

from __future__ import annotations

import math
import os
import sys
import typing
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Third-party modules are imported before instrumentation so that only the project's
# code (and PyYAML's pure-Python parser, which reads the config files) is instrumented.
import numpy as np  # noqa: E402

try:
    from sensor_msgs.msg import Image
except ImportError:  # the ROS 2 message wheels are installed by `make setup`
    Image = None

with atheris.instrument_imports(include=["yaml"]):
    import yaml  # noqa: F401  (compiled before the regex hook: its verbose patterns only make it complain)

# Comparison feedback for regular expressions and str methods (the answer parser is
# regex-driven); must be enabled before the modules compiling the patterns are imported.
atheris.enabled_hooks.add("RegEx")
atheris.enabled_hooks.add("str")

with atheris.instrument_imports(include=["lens_ros", "lens_training"]):
    import lens_ros  # noqa: F401  (first: makes `import lens_training` find this project's package)
    from lens_ros.image_conversion import (
        DEPTH_ENCODINGS,
        ENCODINGS,
        ImageConversionError,
        depth_to_metres,
        image_to_numpy,
        numpy_to_image,
        to_rgb8,
    )
    from lens_ros.model.prompts import (
        MAX_ANSWER_CHARS,
        MAX_INSTRUCTION_CHARS,
        SPECIAL_TOKENS,
        clean_instruction,
        find_box,
        parse_answer,
    )
    from lens_ros.model.types import BadInputError, ConfigError
    from lens_ros.node_config import NodeConfig, check_value, read_params_file
    from lens_training.config import EvalConfig, Stage1Config, Stage2Config, load_config

SELF_CHECK = False


class FuzzInvariantError(AssertionError):
    """A result the project returned without an error breaks what its API promises."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzInvariantError(message)


def _pieces(fdp: atheris.FuzzedDataProvider, pieces: tuple[str, ...], max_parts: int) -> str:
    """Text made of known pieces mixed with short arbitrary strings (reaches deep parser states)."""
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, max_parts)):
        if not fdp.remaining_bytes():
            break
        choice = fdp.ConsumeIntInRange(0, len(pieces))
        if choice == len(pieces):
            parts.append(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8)))
        else:
            parts.append(pieces[choice])
    return "".join(parts)


# --------------------------------------------------------------------------- parser

ANSWER_PIECES = (
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "[",
    "]",
    "(",
    ")",
    ",",
    ", ",
    "-",
    ".",
    "0",
    "1",
    "23",
    "456.5",
    "999999999",
    "9999999999",
    "1e309",
    "nan",
    " ",
    "\n",
    "\t",
    "<|im_end|>",
    "<|endoftext|>",
    "<|box_start|>",
    "<|object_ref_start|>",
    "box",
)


def _answer_text(fdp: atheris.FuzzedDataProvider) -> str:
    mode = fdp.ConsumeIntInRange(0, 15)
    if mode == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    text = _pieces(fdp, ANSWER_PIECES, 64)
    if mode == 15:  # a completion around MAX_ANSWER_CHARS: fuzzed text, plain filler, fuzzed text
        # (plain filler: repeating "<think>" 2000 times costs ~0.5 s per parse, see README's timing test)
        filler = " x\n"[fdp.ConsumeIntInRange(0, 2)] * (MAX_ANSWER_CHARS - len(text) + fdp.ConsumeIntInRange(-64, 64))
        text += filler + _pieces(fdp, ANSWER_PIECES, 64)
    return text


def fuzz_parser(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = _answer_text(fdp)

    parsed = parse_answer(text)  # documented never to raise: no exception is allowed
    if SELF_CHECK and parsed.box is not None:  # planted bug: a parser that swaps the corners
        x1, y1, x2, y2 = parsed.box
        parsed.box = (x2, y2, x1, y1)
    check(isinstance(parsed.format_ok, bool), f"format_ok is {parsed.format_ok!r}")
    check(len(parsed.answer) <= MAX_ANSWER_CHARS, f"answer of {len(parsed.answer)} characters")
    check(len(parsed.think) <= MAX_ANSWER_CHARS, f"think of {len(parsed.think)} characters")
    check(parsed.ok == (parsed.box is not None), "ok disagrees with box")
    if parsed.box is None:
        check(bool(parsed.error), "no box and no error saying why")
    else:
        box = parsed.box
        check(len(box) == 4 and all(type(v) is float for v in box), f"box {box!r} is not 4 floats")
        check(all(math.isfinite(v) for v in box), f"box {box!r} has non-finite numbers")
        x1, y1, x2, y2 = box
        check(x1 < x2 and y1 < y2, f"box {box!r} is not x1 < x2, y1 < y2")
        check(parsed.error == "", f"box {box!r} with error {parsed.error!r}")
        check(find_box(parsed.answer) == box, "box is not the first box of the answer text")

    try:
        cleaned = clean_instruction(text)
    except BadInputError as exc:
        check(bool(str(exc)), "BadInputError without a message")
    else:
        check(0 < len(cleaned) <= MAX_INSTRUCTION_CHARS, f"cleaned instruction of {len(cleaned)} characters")
        check(not any(token in cleaned for token in SPECIAL_TOKENS), f"chat token kept in {cleaned[:200]!r}")
        check(cleaned == " ".join(cleaned.split()), "whitespace not collapsed")


# --------------------------------------------------------------------------- image

ENCODING_NAMES = tuple(sorted(ENCODINGS))
UINT32_MAX = 2**32 - 1


def _image_message(fdp: atheris.FuzzedDataProvider):
    choice = fdp.ConsumeIntInRange(0, len(ENCODING_NAMES))
    if choice < len(ENCODING_NAMES):
        encoding = ENCODING_NAMES[choice]
    else:
        encoding = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    info = ENCODINGS.get(encoding)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 2:  # anything a uint32 field can hold
        height, width, step = (fdp.ConsumeIntInRange(0, UINT32_MAX) for _ in range(3))
        size = fdp.ConsumeIntInRange(0, 64)
    else:
        height, width = fdp.ConsumeIntInRange(0, 40), fdp.ConsumeIntInRange(0, 40)
        if mode == 0 and info is not None:  # consistent layout, optional row padding
            step = width * info.channels * info.dtype.itemsize + fdp.ConsumeIntInRange(0, 9)
            size = step * height
        else:
            step = fdp.ConsumeIntInRange(0, 1024)
            size = fdp.ConsumeIntInRange(0, 4096)
    bigendian = fdp.ConsumeIntInRange(0, 255)
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    payload = (raw * (size // len(raw) + 1))[:size] if raw else bytes(size)

    msg = Image()
    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian = encoding, height, width, step, bigendian
    msg.data = payload
    return msg


def _pixel(buffer: bytes, offset: int, info, bigendian: int) -> bytes:
    """The native-order bytes of the pixel at ``offset``, read independently of image_to_numpy."""
    size = info.channels * info.dtype.itemsize
    wire = np.frombuffer(buffer[offset : offset + size], dtype=info.dtype.newbyteorder(">" if bigendian else "<"))
    return wire.astype(info.dtype).tobytes()


def fuzz_image(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    msg = _image_message(fdp)
    try:
        array = image_to_numpy(msg)
    except ImageConversionError as exc:
        check(bool(str(exc)), "ImageConversionError without a message")
        return
    if SELF_CHECK:  # planted bug: a conversion that swaps rows and columns
        array = np.ascontiguousarray(np.swapaxes(array, 0, 1))

    encoding, height, width, step = msg.encoding, msg.height, msg.width, msg.step
    info = ENCODINGS[encoding]
    check(array.shape[:2] == (height, width), f"{encoding} {width}x{height} gave shape {array.shape}")
    expected_shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    check(array.shape == expected_shape, f"{encoding} gave shape {array.shape}, expected {expected_shape}")
    check(array.dtype == info.dtype and array.dtype.isnative, f"{encoding} gave dtype {array.dtype}")
    buffer = bytes(msg.data)
    check(not np.shares_memory(array, np.frombuffer(msg.data, dtype=np.uint8)), "array aliases msg.data")
    pixels = array.reshape(height, width, info.channels)
    pixel_bytes = info.channels * info.dtype.itemsize
    first, last = (0, 0), (height - 1, width - 1)
    for row, col in (first, last):
        expected = _pixel(buffer, row * step + col * pixel_bytes, info, msg.is_bigendian)
        check(pixels[row, col].tobytes() == expected, f"{encoding} pixel ({row}, {col}) differs from the wire bytes")

    back = image_to_numpy(numpy_to_image(array, encoding))
    check(back.shape == array.shape and back.tobytes() == array.tobytes(), f"{encoding} round trip changed the image")

    try:
        rgb = to_rgb8(array, encoding)
    except ImageConversionError:
        check(encoding in DEPTH_ENCODINGS or info.dtype != np.uint8, f"to_rgb8 refused {encoding}")
    else:
        check(rgb.shape == (height, width, 3) and rgb.dtype == np.uint8, f"to_rgb8 gave {rgb.shape} {rgb.dtype}")
    if encoding in ("16UC1", "32FC1"):
        depth = depth_to_metres(array, encoding)
        check(depth.shape == (height, width) and depth.dtype == np.float32, f"depth {depth.shape} {depth.dtype}")
        valid = depth[~np.isnan(depth)]
        check(bool(np.all(np.isfinite(valid) & (valid > 0))), "depth keeps non-positive or infinite readings")


# --------------------------------------------------------------------------- config

CONFIG_CLASSES = (Stage1Config, Stage2Config, EvalConfig)
CONFIG_KEYS = tuple(sorted({name for cls in CONFIG_CLASSES for name in typing.get_type_hints(cls)}))
NODE_KEYS = tuple(sorted(NodeConfig.__dataclass_fields__))
VALUE_PIECES = (
    "\n",
    "\t",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "'",
    '"',
    "null",
    "~",
    "true",
    "no",
    "0",
    "-3",
    "7",
    "3e-5",
    "0.5",
    "1e309",
    ".nan",
    "-.inf",
    "0x1F",
    "1_000",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    "# ",
    "---\n",
    "...\n",
    "!!python/object:os.system ",
    "!!binary ",
    "!!float ",
    "!!set ",
    "%YAML 1.1\n",
    "\ufeff",
    "\x00",
)
YAML_PIECES = (
    *(key + ": " for key in CONFIG_KEYS + NODE_KEYS),
    "lens_node:\n  ros__parameters:\n",
    "/**:\n  ros__parameters:\n",
    "ros__parameters: ",
    "    ",
    *VALUE_PIECES,
)


class _MemoryFile:
    """A file path backed by memory (memfd): no files are left behind when libFuzzer exits."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("lens-fuzz-config")
        self.path = f"/proc/self/fd/{self.fd}"

    def write(self, data: bytes) -> str:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        return self.path


_config_file: _MemoryFile | None = None


def _field_ok(value, annotation) -> bool:
    if annotation is bool:
        return type(value) is bool
    if annotation is int:
        return type(value) is int
    if annotation is float:
        return type(value) is float
    if annotation is str:
        return type(value) is str
    if annotation == float | None:
        return value is None or type(value) is float
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        return type(value) is tuple and len(value) == len(args) and all(map(_field_ok, value, args))
    raise FuzzInvariantError(f"the fuzz target does not know field type {annotation!r}: extend _field_ok")


def fuzz_config(data: bytes) -> None:
    global _config_file
    if _config_file is None:
        _config_file = _MemoryFile()
    fdp = atheris.FuzzedDataProvider(data)
    cls = CONFIG_CLASSES[fdp.ConsumeIntInRange(0, len(CONFIG_CLASSES) - 1)]
    overrides = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        choice = fdp.ConsumeIntInRange(0, len(CONFIG_KEYS))
        key = CONFIG_KEYS[choice] if choice < len(CONFIG_KEYS) else fdp.ConsumeUnicodeNoSurrogates(4)
        separator = "=" if fdp.ConsumeIntInRange(0, 7) else ""
        overrides.append(key + separator + _pieces(fdp, VALUE_PIECES, 6))
    use_file = fdp.ConsumeBool()
    if fdp.ConsumeBool():
        content = _pieces(fdp, YAML_PIECES, 96).encode("utf-8")
    else:
        content = fdp.ConsumeBytes(fdp.remaining_bytes())
    path = _config_file.write(content)

    try:
        cfg = load_config(cls, path if use_file else None, overrides)
    except ConfigError as exc:
        check(bool(str(exc)), "ConfigError without a message")
    else:
        if SELF_CHECK:  # planted bug: a loader that lets a value through as text
            cfg.batch_size = str(cfg.batch_size)
        check(type(cfg) is cls, f"load_config returned {type(cfg).__name__}, not {cls.__name__}")
        for name, annotation in typing.get_type_hints(cls).items():
            value = getattr(cfg, name)
            check(_field_ok(value, annotation), f"{cls.__name__}.{name} = {value!r} is not {annotation}")

    try:
        values = read_params_file(path)
    except ConfigError as exc:
        check(bool(str(exc)), "ConfigError without a message")
        return
    check(isinstance(values, dict), f"read_params_file returned {type(values).__name__}")
    for name in NODE_KEYS:
        if name in values:
            problem = check_value(name, values[name])  # documented to return the reason, never to raise
            check(isinstance(problem, str), f"check_value returned {problem!r}")


TARGETS = {"parser": fuzz_parser, "image": fuzz_image, "config": fuzz_config}


def main(argv: list[str]) -> None:
    global SELF_CHECK
    args = argv[1:]
    if not args or args[0] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [--self-check] [libFuzzer flags] [corpus dirs]")
    target = TARGETS[args[0]]
    SELF_CHECK = "--self-check" in args
    if target is fuzz_image and Image is None:
        sys.exit("the image target needs sensor_msgs (ROS 2 message wheels, installed by `make setup`)")
    libfuzzer_args = [a for a in args[1:] if a != "--self-check"]
    atheris.Setup([argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
