"""Resolve a run's configuration: built-in defaults < a named preset in config.yaml < CLI flags.

Dict-valued options (--model-config, --agent-config, --tasksets-config, --dataset-config)
merge key by key across the three layers, so a preset can set `increment` and the command
line only `initial_increment`. Dict flags take the users' existing Python-literal syntax,
parsed with `ast.literal_eval` (literals only: never `eval`).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from trainer.errors import UserError


@dataclass(frozen=True)
class Option:
    name: str
    kind: Callable  # str, int, float, bool or dict
    default: Any
    help: str
    choices: tuple = ()
    metavar: str | None = None


BACKENDS = ("auto", "horovod", "torch")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adam", "adamw")
LOG_LEVELS = ("debug", "info", "warning", "error")

OPTIONS = (
    Option("model", str, "mnistnet", "model name (see models/)"),
    Option("model_config", dict, {}, "model options, e.g. \"{'hidden': 256}\""),
    Option("agent", str, "base", "agent name (see agents/)"),
    Option("agent_config", dict, {}, "agent options, e.g. \"{'reset_state_dict': True}\""),
    Option("dataset", str, "digits", "dataset name (see data/)"),
    Option("dataset_dir", str, None, "folder that holds the dataset files"),
    Option("dataset_config", dict, {}, "dataset options (synthetic shape and size, image size)"),
    Option("tasksets_config", dict, {}, "scenario, e.g. \"{'scenario': 'class', 'increment': 2}\""),
    Option("backend", str, "auto", "distributed engine", BACKENDS),
    Option("batch_size", int, 32, "new samples per step and rank (B)"),
    Option("eval_batch_size", int, 256, "samples per evaluation batch and rank"),
    Option("epochs", int, 10, "epochs per task"),
    Option("lr", float, 0.02, "learning rate for one rank (scaled by the world size)"),
    Option("optimizer", str, "sgd", "optimizer", OPTIMIZERS),
    Option("momentum", float, 0.9, "SGD momentum"),
    Option("weight_decay", float, 0.0, "weight decay"),
    Option("warmup_epochs", float, 0.0, "epochs of linear LR warm-up at the start of each task"),
    Option("seed", int, 0, "seed for weights, data order and buffers"),
    Option("results_dir", str, "results", "parent folder of the run's results folder"),
    Option("run_name", str, None, "name of the results folder (default: time, agent, dataset, seed)"),
    Option("log_level", str, "info", "log level", LOG_LEVELS),
    Option("device", str, "auto", "device to train on", DEVICES),
    Option("workers", int, 0, "data loader worker processes per rank"),
    Option("augment", bool, False, "random crop (padding: width/8) and horizontal flip of training "
           "batches, new samples and representatives alike, on the device"),
    Option("checkpoint_every", int, 0, "also checkpoint every N epochs inside a task (0: only after each task)"),
    Option("resume", str, None, "resume from the last complete checkpoint of this results folder "
           "(`--resume` alone: the --run-name folder)", metavar="PATH"),
    Option("plots", bool, True, "write PNG plots at the end of the run"),
    Option("tensorboard", bool, True, "write TensorBoard event files"),
)
BY_NAME = {o.name: o for o in OPTIONS}
DICT_OPTIONS = tuple(o.name for o in OPTIONS if o.kind is dict)
RESUME_LATEST = "__latest__"


def defaults() -> dict:
    return {o.name: (dict(o.default) if o.kind is dict else o.default) for o in OPTIONS}


def parse_dict(text: str, flag: str) -> dict:
    """Parse "{'a': 1}" (Python literal) or YAML flow/JSON syntax into a dict, safely."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = None
    if not isinstance(value, dict):
        raise UserError(f"--{flag.replace('_', '-')} must be a dict such as \"{{'key': value}}\", got {text!r}")
    return value


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse, but every error is one line that names the valid choices."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            bad = message.split(":", 1)[1].split()
            flags = sorted(f for a in self._actions for f in a.option_strings if f.startswith("--"))
            hints = []
            for flag in bad:
                close = difflib.get_close_matches(flag.split("=")[0], flags, n=1)
                hints.append(f"{flag}" + (f" (did you mean {close[0]}?)" if close else ""))
            raise UserError(f"unknown option {', '.join(hints)}; valid options: {' '.join(flags)}")
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="main.py",
        description="Data-parallel continual learning with a globally sampled rehearsal buffer.",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--yaml-config", dest="yaml_config", default="config.yaml",
                        help="YAML file with named presets (default: config.yaml)")
    parser.add_argument("--config", dest="preset", default=None,
                        help="name of a preset in the YAML file")
    for o in OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": o.name, "help": f"{o.help} (default: {o.default!r})"}
        if o.name == "resume":
            kwargs.update(nargs="?", const=RESUME_LATEST, metavar="PATH")
        elif o.kind is bool:
            kwargs.update(type=_bool, metavar="true|false")
        elif o.kind is dict:
            kwargs.update(type=str, metavar="DICT")
        else:
            kwargs.update(type=o.kind, metavar=o.metavar or o.name.upper())
        parser.add_argument(flag, **kwargs)
    return parser


def load_presets(path: str) -> dict:
    """Read the presets file; a malformed file is a one-line UserError with its location."""
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise UserError(f"YAML config {path} not found (give one with --yaml-config)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{path} must map preset names to mappings of options "
                        f"(e.g. 'joint: {{agent: base}}')")
    return data


def _normalise_layer(layer: dict, source: str) -> dict:
    """Map dashed keys to option names, check names and types."""
    out = {}
    for key, value in layer.items():
        name = str(key).replace("-", "_")
        if name not in BY_NAME:
            close = difflib.get_close_matches(name, BY_NAME, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"unknown option {key!r} in {source}{hint}; valid options: {', '.join(BY_NAME)}")
        out[name] = _coerce(BY_NAME[name], value, source)
    return out


def _coerce(option: Option, value: Any, source: str) -> Any:
    if value is None:
        return None
    if option.kind is dict:
        if isinstance(value, str):
            value = parse_dict(value, option.name)
        if not isinstance(value, dict):
            raise UserError(f"{option.name} in {source} must be a mapping, got {value!r}")
        return dict(value)
    if option.kind is bool and isinstance(value, str):
        try:
            return _bool(value)
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{option.name} in {source}: {exc}") from None
    try:
        return option.kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{option.name} in {source} must be {option.kind.__name__}, got {value!r}") from None


def merge(*layers: dict) -> dict:
    """Later layers win; dict-valued options merge key by key."""
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if key in DICT_OPTIONS and isinstance(out.get(key), dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def validate(cfg: dict) -> None:
    for o in OPTIONS:
        if o.choices and cfg[o.name] not in o.choices:
            raise UserError(f"unknown {o.name} {cfg[o.name]!r}; valid choices: {', '.join(o.choices)}")
    for name in ("batch_size", "eval_batch_size", "epochs"):
        if cfg[name] < 1:
            raise UserError(f"{name} must be at least 1, got {cfg[name]}")
    if cfg["lr"] <= 0:
        raise UserError(f"lr must be positive, got {cfg['lr']}")
    for name in ("workers", "checkpoint_every", "warmup_epochs", "weight_decay", "momentum"):
        if cfg[name] < 0:
            raise UserError(f"{name} must not be negative, got {cfg[name]}")


def resolve(argv: list[str] | None = None) -> dict:
    """The full, validated configuration of a run from the command line."""
    args = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    yaml_path = args.pop("yaml_config", "config.yaml")
    preset_name = args.pop("preset", None)
    cli = _normalise_layer(args, "the command line")
    preset = {}
    if preset_name is not None:
        presets = load_presets(yaml_path)
        if preset_name not in presets:
            raise UserError(f"no preset {preset_name!r} in {yaml_path}; "
                            f"valid presets: {', '.join(presets) or '(none)'}")
        preset = _normalise_layer(presets[preset_name], f"preset {preset_name!r} of {yaml_path}")
    cfg = merge(defaults(), preset, cli)
    cfg["preset"] = preset_name
    validate(cfg)
    return cfg
