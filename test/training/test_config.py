"""Stage configs: YAML files, key=value overrides, type checks."""

from pathlib import Path

import pytest

from lens_ros.model.types import ConfigError
from lens_training.config import Stage1Config, Stage2Config, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config/training"


def test_overrides_win_over_yaml_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3e-5\nmax_steps: 7\nbetas: [0.9, 0.95]\n")
    cfg = load_config(Stage2Config, path, ["max_steps=9", "clip_eps=0.2", "lora=true", "data=synthetic:val"])
    assert cfg.lr == 3e-5 and cfg.max_steps == 9 and cfg.clip_eps == 0.2 and cfg.lora is True
    assert cfg.betas == (0.9, 0.95) and cfg.data == "synthetic:val" and cfg.group_size == 8
    assert load_config(Stage2Config, None, ["clip_eps=null"]).clip_eps is None


def test_unknown_key_and_wrong_type_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        load_config(Stage1Config, None, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="integer"):
        load_config(Stage1Config, None, ["max_steps=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Stage1Config, None, ["max_steps"])


@pytest.mark.parametrize("name", ["stage1.yaml", "stage1_tiny.yaml", "stage2.yaml", "stage2_tiny.yaml", "fsdp_3b.yaml"])
def test_shipped_configs_load(name):
    cls = Stage1Config if name.startswith("stage1") else Stage2Config  # fsdp_3b layers over either
    cfg = load_config(cls, CONFIG_DIR / name)
    assert cfg.max_steps > 0 or cfg.epochs > 0


def test_config_files_layer_in_order():
    cfg = load_config(Stage2Config, [CONFIG_DIR / "stage2.yaml", CONFIG_DIR / "fsdp_3b.yaml"], ["group_size=4"])
    assert cfg.distributed == "fsdp" and cfg.lr == 3e-6 and cfg.group_size == 4 and cfg.mixed_precision == "bf16"


def test_string_fields_keep_the_text_as_typed():
    cfg = load_config(Stage1Config, None, ["mixed_precision=no", "data=synthetic:train:10:64x48", "model=on"])
    assert cfg.mixed_precision == "no" and cfg.data == "synthetic:train:10:64x48" and cfg.model == "on"


def test_a_yaml_alias_bomb_in_a_text_field_is_a_short_config_error(tmp_path):
    """22 nested aliases in 400 bytes would expand to a 42-million-character string."""
    levels = ["&a0 [1, 1]"] + [f"&a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 22)]
    path = tmp_path / "bomb.yaml"
    path.write_text("model: [" + ", ".join(levels) + "]\n")
    with pytest.raises(ConfigError) as info:
        load_config(Stage1Config, str(path), [])
    assert "expected text" in str(info.value) and len(str(info.value)) < 2000
