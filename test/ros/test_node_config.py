"""NodeConfig: the node's parameters, their file and their ROS declaration."""

from __future__ import annotations

from pathlib import Path

import pytest

from lens_ros.node_config import NodeConfig, check_value, declare_parameters, read_params_file

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_shipped_params_file_sets_every_parameter_to_its_default():
    values = read_params_file(CONFIG / "lens_node.yaml")
    assert set(values) == set(NodeConfig().to_dict()), "config/lens_node.yaml and NodeConfig disagree on names"
    assert NodeConfig.from_dict(values) == NodeConfig()


def test_params_file_wildcard_then_node_section(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    device: cuda\n    min_score: 1\n"
        "lens_node:\n  ros__parameters:\n    device: cpu\n"
    )
    config = NodeConfig.from_params_file(path)
    assert config.device == "cpu" and config.min_score == 1.0


def test_unknown_or_mistyped_parameters_are_rejected_with_their_names():
    with pytest.raises(ValueError, match="mask_treshold"):
        NodeConfig.from_dict({"mask_treshold": 0.5})
    with pytest.raises(ValueError, match="track"):
        NodeConfig.from_dict({"track": "yes"})


def test_check_value_enforces_choices_and_ranges():
    assert check_value("dtype", "bfloat16") == ""
    assert "one of" in check_value("segmenter_backend", "tensorrt")
    assert "[0.0, 1.0]" in check_value("min_score", 2.0)


def test_declared_parameters_have_descriptors_and_overrides_apply(rclpy_context):
    import rclpy
    from rclpy.parameter import Parameter

    node = rclpy.create_node(
        "lens_node",
        context=rclpy_context,
        parameter_overrides=[Parameter("reason_interval_s", value=2.5), Parameter("model", value="/models/bundle")],
    )
    try:
        config = declare_parameters(node)
        assert config.reason_interval_s == 2.5 and config.model == "/models/bundle"
        descriptor = node.describe_parameter("model")
        assert descriptor.read_only and "bundle" in descriptor.description
        assert not node.describe_parameter("min_score").read_only
        assert node.describe_parameter("min_score").floating_point_range[0].to_value == 1.0
    finally:
        node.destroy_node()


def test_device_auto_picks_what_exists_and_a_missing_gpu_is_a_clear_error():
    """The node hands device/dtype to the pipeline; presets.resolve_* is the one place "auto" is decided."""
    import torch

    from lens_ros.model.presets import get_preset, resolve_device, resolve_dtype

    gpu = torch.cuda.is_available()
    assert resolve_device("auto") == torch.device("cuda" if gpu else "cpu")
    tiny = get_preset("lens-tiny")
    assert resolve_device("auto", preferred=tiny.auto_device) == torch.device("cpu"), "tiny: faster on the CPU"
    assert resolve_dtype("auto", "cpu", preferred="bfloat16") == torch.float32
    assert resolve_dtype("auto", "cuda", preferred="bfloat16") == torch.bfloat16
    assert resolve_dtype("auto", "cuda", preferred=tiny.dtype) == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    if not gpu:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_instructions_are_cleaned_and_bounded():
    from lens_ros.node_inputs import clean_instruction

    assert clean_instruction("  the\tred\x00 cube\n", 512) == ("the red cube", "")
    assert clean_instruction(" \n ", 512)[1] == "empty instruction"
    assert "max_instruction_length 10" in clean_instruction("x" * 11, 10)[1]
    assert "max_instruction_length 10" in clean_instruction("x" * 10_000_000, 10)[1]


@pytest.mark.parametrize(("cores", "requested", "threads"), [(2, 0, 1), (1, 0, 1), (16, 0, 15), (2, 2, 2), (16, 4, 4)])
def test_cpu_threads_default_leaves_a_core_to_the_executor(monkeypatch, cores, requested, threads):
    import lens_ros.node_inputs as node

    monkeypatch.setattr(node, "_TORCH_THREADS", [cores])
    assert node.inference_threads(requested) == threads
