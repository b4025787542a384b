"""Config resolution: defaults < preset in config.yaml < explicit CLI flags; dicts merge by key."""
import pytest

from common.errors import UserError
from trainer import config


@pytest.fixture
def presets(tmp_path):
    path = tmp_path / "presets.yaml"
    path.write_text(
        "fast:\n"
        "  epochs: 3\n"
        "  lr: 0.2\n"
        "  tasksets_config: {scenario: class, increment: 3, initial_increment: 4}\n"
        "  agent-config: {reset_state_dict: true}\n"
    )
    return str(path)


def test_defaults_without_flags():
    cfg = config.resolve([])
    assert cfg["model"] == "mnistnet" and cfg["dataset"] == "digits" and cfg["agent"] == "base"
    assert cfg["backend"] == "auto" and cfg["tasksets_config"] == {}


def test_preset_overrides_defaults_and_cli_overrides_preset(presets):
    cfg = config.resolve(["--yaml-config", presets, "--config", "fast", "--lr", "0.01"])
    assert cfg["epochs"] == 3          # from the preset
    assert cfg["lr"] == 0.01           # CLI beats the preset
    assert cfg["batch_size"] == 32     # default, untouched by either
    assert cfg["agent_config"] == {"reset_state_dict": True}  # dashed key in YAML accepted


def test_dict_flags_merge_key_by_key(presets):
    cfg = config.resolve(["--yaml-config", presets, "--config", "fast",
                          "--tasksets-config", "{'initial_increment': 2}"])
    assert cfg["tasksets_config"] == {"scenario": "class", "increment": 3, "initial_increment": 2}


def test_users_dict_syntax_is_parsed_as_literals():
    cfg = config.resolve(["--tasksets-config", "{'scenario': 'class', 'initial_increment': 4, 'increment': 3}",
                          "--agent-config", "{'reset_state_dict': True}"])
    assert cfg["tasksets_config"] == {"scenario": "class", "initial_increment": 4, "increment": 3}
    assert cfg["agent_config"] == {"reset_state_dict": True}


def test_dict_flags_never_evaluate_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UserError, match="must be a dict"):
        config.resolve(["--model-config", f"__import__('pathlib').Path('{marker}').touch()"])
    assert not marker.exists()


@pytest.mark.parametrize("argv, message", [
    (["--backend", "mxnet"], "valid choices: auto, horovod, torch"),
    (["--tasksets-config", "{'scenario': 'class'"], "--tasksets-config must be a dict"),
    (["--config", "nope"], "valid presets:"),
    (["--lr", "fast"], "invalid float value"),
    (["--learning-rate", "0.1"], "unknown option --learning-rate"),
    (["--epochs", "0"], "epochs must be at least 1"),
])
def test_bad_input_is_a_user_error(argv, message, presets):
    if "--config" in argv:
        argv = ["--yaml-config", presets, *argv]
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        config.resolve(argv)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fast:\n  epochs: 3\n  lr: [0.1\n")
    with pytest.raises(UserError, match=r"malformed YAML in .*bad.yaml at line \d+"):
        config.resolve(["--yaml-config", str(bad), "--config", "fast"])


def test_unknown_key_in_preset_lists_valid_options(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("p:\n  epoch: 3\n")
    with pytest.raises(UserError, match="did you mean epochs"):
        config.resolve(["--yaml-config", str(bad), "--config", "p"])


def test_shipped_config_yaml_presets_all_resolve():
    for name in config.load_presets("config.yaml"):
        config.resolve(["--config", name])


@pytest.mark.parametrize("preset, classes, num_classes", [("ccgrid24_imagenet", 250, None),
                                                          ("ccgrid24_imagenet100", 25, 100)])
def test_ccgrid24_presets_are_the_published_protocol(preset, classes, num_classes):
    """CCGrid 2024: ResNet-50, 4 tasks, 30 epochs (5 warm-up), SGD 0.9, wd 5e-5, 0.0125 per GPU
    x min(GPUs, 64), x0.5/0.05/0.01 at epochs 21/26/28, mixed precision, B=56, R=7, 30% buffer."""
    cfg = config.resolve(["--config", preset])
    assert cfg["model"] == "resnet50" and cfg["dataset"] == "imagenet"
    assert cfg["dataset_config"].get("num_classes") == num_classes
    assert cfg["tasksets_config"] == {"scenario": "class", "initial_increment": classes, "increment": classes}
    assert (cfg["epochs"], cfg["warmup_epochs"]) == (30, 5)
    assert (cfg["optimizer"], cfg["momentum"], cfg["weight_decay"]) == ("sgd", 0.9, 5e-5)
    assert (cfg["lr"], cfg["lr_scale_cap"], cfg["lr_schedule"]) == (0.0125, 64, "step")
    assert cfg["lr_milestones"] == [21, 26, 28] and cfg["lr_factors"] == [0.5, 0.05, 0.01]
    assert cfg["amp"] == "fp16"
    assert cfg["agent"] == "nil_cpp" and cfg["batch_size"] == 56
    assert cfg["agent_config"] == {"num_representatives": 7, "num_candidates": 14, "rehearsal_ratio": 30,
                                   "policy": "fixed"}
    from trainer.schedule import peak_lr

    assert peak_lr(cfg, 16) == pytest.approx(0.2) and peak_lr(cfg, 128) == pytest.approx(0.8)
