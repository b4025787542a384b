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
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from common.errors import UserError
from common.seeding import MAX_SEED


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
AMP_MODES = ("off", "bf16", "fp16")
LR_SCHEDULES = ("constant", "step", "cosine")


class _ListError(argparse.ArgumentTypeError, ValueError):
    """A bad list: argparse prints its message as is, and _coerce turns it into a UserError."""


class NumberList:
    """Option kind: finite numbers, "21,26,28" on the command line or [21, 26, 28] in YAML ("": none)."""

    __name__ = "a list of numbers"

    def __call__(self, value) -> list:
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or any(isinstance(v, bool) for v in items):
            raise _ListError(f"expected numbers separated by commas (e.g. 21,26,28), got {value!r}")
        try:
            numbers = [float(v) for v in items]
        except (TypeError, ValueError):
            raise _ListError(f"expected numbers separated by commas (e.g. 21,26,28), got {value!r}") from None
        if not all(math.isfinite(v) for v in numbers):
            raise _ListError(f"expected finite numbers, got {value!r}")
        return [int(v) if v.is_integer() else v for v in numbers]  # 21, not 21.0, in config.yaml


def _amp_mode(value) -> str:
    """--amp's value; YAML reads a bare `off` as false, which means off too."""
    if value is False:
        return "off"
    if not isinstance(value, str):
        raise ValueError(f"expected one of {', '.join(AMP_MODES)}, got {value!r}")
    return value


_amp_mode.__name__ = "one of " + ", ".join(AMP_MODES)

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
    Option("lr", float, 0.02, "learning rate for one rank (scaled by the world size); er/nil*, der and "
           "derpp have their own tuned defaults of --lr and --momentum (see README, Agents)"),
    Option("optimizer", str, "sgd", "optimizer", OPTIMIZERS),
    Option("momentum", float, 0.9, "SGD momentum"),
    Option("weight_decay", float, 0.0, "weight decay"),
    Option("clip_grad_norm", float, 0.0, "clip the gradient's global L2 norm to this before each step "
           "(0: off); after the gradients are averaged over ranks, and unscaled under --amp fp16"),
    Option("warmup_epochs", float, 0.0, "epochs of linear LR warm-up at the start of each task"),
    Option("lr_schedule", str, "constant", "LR after the warm-up, restarted at every task", LR_SCHEDULES),
    Option("lr_milestones", NumberList(), [], "step schedule: epochs (from the task's start) at which the LR "
           "becomes peak x the matching --lr-factors value, e.g. 21,26,28", metavar="E1,E2,..."),
    Option("lr_factors", NumberList(), [], "step schedule: LR / peak LR from each milestone on (not "
           "compounded), e.g. 0.5,0.05,0.01", metavar="F1,F2,..."),
    Option("lr_min", float, 0.0, "cosine schedule: the LR it decays to at the end of each task"),
    Option("lr_scale_cap", int, None, "the LR is scaled by min(world size, this); default: no cap",
           metavar="RANKS"),
    Option("amp", _amp_mode, "off", "mixed precision of the forward pass and losses: bf16 (CPU or GPU), "
           "fp16 (GPU, with a GradScaler)", AMP_MODES),
    Option("channels_last", bool, False, "NHWC memory format for the model and its inputs (CNNs on GPUs)"),
    Option("seed", int, 0, "seed for weights, data order and buffers"),
    Option("results_dir", str, "results", "parent folder of the run's results folder"),
    Option("run_name", str, None, "name of the results folder (default: time, agent, dataset, seed)"),
    Option("log_level", str, "info", "log level", LOG_LEVELS),
    Option("device", str, "auto", "device to train on", DEVICES),
    Option("workers", int, 0, "data loader worker processes per rank"),
    Option("verify_data", str, "decode", "check every image file before training: decode (JPEGs at 1/8 "
           "scale), open (headers only), off", ("decode", "open", "off")),
    Option("augment", bool, False, "random crop (padding: width/8) and horizontal flip of training "
           "batches, new samples and representatives alike, on the device"),
    Option("divergence_patience", int, 1, "steps in a row with a non-finite training loss (on any rank) after "
           "which the run stops as diverged (exit 3, metrics.json status 'diverged', no accuracy reported)"),
    Option("checkpoint_every", int, 0, "also checkpoint every N epochs inside a task (0: only after each task)"),
    Option("resume", str, None, "continue the run in this results folder from its last complete "
           "checkpoint; `--resume` alone: the --run-name folder, or the run in --results-dir whose "
           "configuration matches this command line, else start afresh", metavar="PATH"),
    Option("overwrite", bool, False, "replace the --run-name folder if it exists (its checkpoints too)"),
    Option("plots", bool, True, "write PNG plots at the end of the run"),
    Option("tensorboard", bool, True, "write TensorBoard event files"),
)
BY_NAME = {o.name: o for o in OPTIONS}
DICT_OPTIONS = tuple(o.name for o in OPTIONS if o.kind is dict)
RESUME_LATEST = "__latest__"


def defaults() -> dict:
    return {o.name: (dict(o.default) if o.kind is dict else list(o.default) if isinstance(o.default, list)
                     else o.default) for o in OPTIONS}


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


def _registered_names() -> dict:
    """Valid models, agents and datasets, from their registries, for --help."""
    from agents import AGENTS
    from data import DATASETS
    from models import MODELS

    return {"model": tuple(MODELS), "agent": tuple(sorted(AGENTS)), "dataset": tuple(DATASETS)}


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
    registered = _registered_names()
    for o in OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        valid = o.choices or registered.get(o.name, ())
        choices = f"; one of: {', '.join(valid)}" if valid else ""
        kwargs: dict[str, Any] = {"dest": o.name, "help": f"{o.help}{choices} (default: {o.default!r})"}
        if o.name == "resume":
            kwargs.update(nargs="?", const=RESUME_LATEST, metavar="PATH")
        elif o.kind is bool:
            kwargs.update(type=_bool, metavar="true|false", nargs="?", const=True)  # `--flag` alone: true
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
    except IsADirectoryError:
        raise UserError(f"YAML config {path} is a folder, not a file (give one with --yaml-config)") from None
    except PermissionError:
        raise UserError(f"YAML config {path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read YAML config {path}: {exc}") from None
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
    """A value from YAML or the command line as the option's type; never silently truncated."""
    if value is None:
        if option.default is None:
            return None
        raise UserError(f"{option.name} in {source} must be {_kind_name(option)}, got null")
    if option.kind is dict:
        if isinstance(value, str):
            value = parse_dict(value, option.name)
        if not isinstance(value, dict):
            raise UserError(f"{option.name} in {source} must be a mapping, got {value!r}")
        _check_keys(value, option.name, source)
        return dict(value)
    if option.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return _bool(value)
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"{option.name} in {source}: {exc}") from None
    elif option.kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
    elif option.kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif option.kind is str:
        if isinstance(value, str):
            return value
    else:  # list-valued and other option kinds parse themselves
        try:
            return option.kind(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{option.name} in {source}: {exc}") from None
    raise UserError(f"{option.name} in {source} must be {_kind_name(option)}, got {value!r}")


def _kind_name(option: Option) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping"}.get(option.kind, getattr(option.kind, "__name__", str(option.kind)))


def _check_keys(value: dict, name: str, source: str) -> None:
    """Option dicts are keyed by option names: strings, at every level."""
    for key, item in value.items():
        if not isinstance(key, str):
            raise UserError(f"{name} in {source}: keys must be option names (strings), got {key!r}")
        if isinstance(item, dict):
            _check_keys(item, name, source)


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
    """Ranges and finiteness of every option: a NaN learning rate must not train to chance."""
    for o in OPTIONS:
        if o.choices and cfg[o.name] not in o.choices:
            raise UserError(f"unknown {o.name} {cfg[o.name]!r}; valid choices: {', '.join(o.choices)}")
        if o.kind is float and cfg[o.name] is not None and not math.isfinite(cfg[o.name]):
            raise UserError(f"{o.name} must be a finite number, got {cfg[o.name]}")
    for name in ("batch_size", "eval_batch_size", "epochs", "divergence_patience"):
        if cfg[name] < 1:
            raise UserError(f"{name} must be at least 1, got {cfg[name]}")
    if cfg["lr"] <= 0:
        raise UserError(f"lr must be positive, got {cfg['lr']}")
    for name in ("workers", "checkpoint_every", "warmup_epochs", "weight_decay", "momentum", "clip_grad_norm"):
        if cfg[name] < 0:
            raise UserError(f"{name} must not be negative, got {cfg[name]}")
    if not 0 <= cfg["seed"] <= MAX_SEED:
        raise UserError(f"seed must be an integer in [0, {MAX_SEED}], got {cfg['seed']}")
    cpus = os.cpu_count() or 1
    if cfg["workers"] > 4 * cpus:
        raise UserError(f"workers must be at most 4 x the {cpus} CPUs of this machine ({4 * cpus}), "
                        f"got {cfg['workers']}")
    for name in ("run_name",):
        value = cfg[name]
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise UserError(f"{name} must be a folder name (no '/'), got {value!r}")
    if cfg["overwrite"] and cfg["resume"] is not None:
        raise UserError("--overwrite and --resume contradict each other: give one of them")
    if cfg["overwrite"] and not cfg["run_name"]:
        raise UserError("--overwrite replaces the --run-name folder: give --run-name too")
    from trainer.schedule import check_options as check_lr_options

    check_lr_options(cfg)


def resolve(argv: list[str] | None = None) -> dict:
    """The full, validated configuration of a run from the command line."""
    return resolve_with_sources(argv)[0]


def resolve_with_sources(argv: list[str] | None = None) -> tuple[dict, set]:
    """(configuration, the options set by the preset or the command line rather than defaults)."""
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
    cfg = with_agent_defaults(merge(defaults(), preset, cli), set(preset) | set(cli))
    cfg["preset"] = preset_name
    validate(cfg)
    return cfg, set(preset) | set(cli)


def with_agent_defaults(cfg: dict, explicit: set) -> dict:
    """The agent's own defaults of main.py options (its tuned --lr, --momentum: `run_defaults` of
    its class), for the options that neither the preset nor the command line sets."""
    from agents import AGENTS

    cls = AGENTS.get(cfg["agent"], (None,))[0]  # an unknown agent is reported by main.check_choices
    own = getattr(cls, "run_defaults", {})
    return {**cfg, **{k: v for k, v in own.items() if k not in explicit}}
