"""Which results folder a launch writes, and whether it continues a run: decided before anything is written.

A run's identity is the fingerprint of its experiment configuration (every option except the
runtime ones below), saved in its folder (`config.yaml`, `run.json`). A launch

- without `--resume` starts a new run in a folder that must not hold one (`--overwrite`
  replaces a `--run-name` folder);
- with `--resume PATH` continues that run; options given on the command line (or by the
  preset) must match its saved configuration, the others come from it;
- with `--resume` alone continues the `--run-name` folder, or without a name the run in
  `--results-dir` whose configuration matches this command line; with no such run it starts
  afresh and says so (so a requeued batch job can always pass it). Its whole configuration
  must match the run's: a changed flag is refused with what differs, never silently ignored.

A finished run is never touched: resuming it says so and exits 0. Neither is a diverged one:
resuming it says where it diverged and exits 3 (it would diverge again from the same state), so
a requeued batch job does not loop.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.errors import UserError
from trainer import checkpoint, run_folder
from trainer.agreement import canonical
from trainer.config import RESUME_LATEST, defaults
from trainer.run_folder import LOCK_FILE, check_not_in_use

# Options that may change between the interrupted run and its continuation; the rest
# (data, model, agent, seed, schedule) define the experiment and come from the saved config.
RUNTIME_OPTIONS = ("backend", "device", "workers", "verify_data", "log_level", "plots", "tensorboard",
                   "checkpoint_every", "resume", "results_dir", "run_name", "eval_batch_size",
                   "overwrite", "preset")


def experiment(cfg: dict) -> dict:
    """The options that define the experiment, with options added since a run was saved at
    their defaults (so older runs stay resumable as long as the defaults keep their meaning), and
    the agent's options spelled out in full (so giving a default by name is no difference)."""
    full = {**defaults(), **cfg}
    full["agent_config"] = _agent_options_in_full(full["agent"], full["agent_config"])
    return {k: v for k, v in sorted(full.items()) if k not in RUNTIME_OPTIONS}


def _agent_options_in_full(agent: str, options: dict) -> dict:
    """`options` over the agent's defaults, with what its name fixes (as the run used them)."""
    from agents import agent_class

    try:
        cls, fixed = agent_class(agent)
        return cls.check_options({**options, **fixed})  # defaults filled in, numbers of the option's type
    except UserError:  # an unknown agent or a bad option: reported where the options are checked
        return options


def saved_agent(cfg: dict, explicit: set) -> str | None:
    """The agent of the run that `--resume PATH` (or `--resume --run-name NAME`) names, when the
    command line does not name one: its options are checked against that agent, not the default."""
    if "agent" in explicit or cfg.get("resume") is None:
        return None
    if cfg["resume"] != RESUME_LATEST:
        folder = _run_of_checkpoint(Path(cfg["resume"])) or Path(cfg["resume"])
    elif cfg.get("run_name"):
        folder = Path(cfg["results_dir"]) / cfg["run_name"]
    else:
        return None
    try:
        return saved_config(folder)["agent"]
    except UserError:  # no such run, or a damaged one: said when the resume is planned
        return None


def fingerprint(cfg: dict) -> str:
    return hashlib.sha256(canonical(experiment(cfg)).encode()).hexdigest()[:16]


def differences(wanted: dict, saved: dict, names=None) -> list[str]:
    """'name: value here (run has value)' for each experiment option that differs."""
    if names is not None and "agent" not in names:  # the agent's options are the run's agent's
        wanted = {**wanted, "agent": saved.get("agent")}
    a, b = experiment(wanted), experiment(saved)
    keys = [k for k in a if (names is None or k in names)]
    out = []
    for k in keys:
        if canonical(a[k]) == canonical(b.get(k)):
            continue
        if isinstance(a[k], dict) and isinstance(b.get(k), dict):  # name the keys that differ
            out += [f"{k}.{key}: {a[k].get(key)!r} here, {b[k].get(key)!r} in the run"
                    for key in sorted(set(a[k]) | set(b[k])) if canonical(a[k].get(key)) != canonical(b[k].get(key))]
        else:
            out.append(f"{k}: {a[k]!r} here, {b.get(k)!r} in the run")
    return out


@dataclass
class Plan:
    """What this launch does; made on rank 0 and broadcast, so every rank does the same."""
    action: str                      # "new" | "restart" (same run, no checkpoint yet) | "resume" | "finished"
    #                                  | "diverged"
    run_dir: Path | None             # None: a new, generated name
    cfg: dict
    checkpoints: list = field(default_factory=list)  # complete checkpoints, newest first
    note: str = ""                   # what was decided, said once in the run's log
    run_id: str | None = None        # the continued run's id (run.json); None: a new run draws one


def saved_config(run_dir: Path) -> dict:
    """A run folder's saved configuration; a missing or damaged file is one line."""
    path = run_dir / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} holds no config.yaml: not a results folder of this trainer, "
                        f"or a damaged one") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the saved configuration {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(saved, dict) or not {"model", "agent", "dataset"} <= set(saved):
        raise UserError(f"the saved configuration {path} is damaged (not a mapping of options)")
    return saved


def _with_runtime(saved: dict, cfg: dict, run_dir: Path) -> dict:
    """The run's saved config, with this launch's runtime options on top."""
    merged = {**defaults(), **saved, **{k: cfg[k] for k in RUNTIME_OPTIONS if k in cfg}}
    merged.update(run_name=run_dir.name, results_dir=str(run_dir.parent))
    return merged


def _holds_a_run(path: Path) -> bool:
    return path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir())


def _continue(run_dir: Path, cfg: dict, compare=None) -> Plan:
    """Continue the run in run_dir: refused when the options named in `compare` (None: all) differ."""
    saved = saved_config(run_dir)
    diff = differences(cfg, saved, compare)
    if diff:
        raise UserError(f"--resume: {run_dir} holds another experiment; this command line differs in "
                        f"{'; '.join(diff)} (give the run's settings, or another --run-name)")
    merged = _with_runtime(saved, cfg, run_dir)
    status = run_folder.record(run_dir)
    if status.get("status") == "finished":
        return Plan("finished", run_dir, merged, note=f"run {run_dir} is already finished; nothing to do")
    if status.get("status") == "diverged":
        where = status.get("diverged") or {}
        return Plan("diverged", run_dir, merged, note=(
            f"run {run_dir} diverged (non-finite loss at task {where.get('task')}, epoch {where.get('epoch')}, step "
            f"{where.get('step')}) and is not resumed: it would diverge again; start a new run with other options"))
    found = checkpoint.complete_checkpoints(run_dir)[::-1]
    if found:
        return Plan("resume", run_dir, merged, found, note=f"continuing run {run_dir}", run_id=status.get("run_id"))
    return Plan("restart", run_dir, merged,
                note=f"run {run_dir} has no complete checkpoint yet: starting it from the beginning")


def _matching_run(results_dir: Path, cfg: dict) -> Path | None:
    """The run in results_dir with this experiment's fingerprint: an unfinished one first, newest."""
    if not results_dir.is_dir():
        return None
    wanted, matches = fingerprint(cfg), []
    for path in results_dir.iterdir():
        try:
            if path.is_dir() and fingerprint(saved_config(path)) == wanted:
                matches.append(path)
        except UserError:
            continue  # not a run folder, or a damaged one: not ours
    if not matches:
        return None
    return max(matches, key=lambda p: (run_folder.status(p) not in run_folder.ENDED, p.stat().st_mtime))


def _run_of_checkpoint(path: Path) -> Path | None:
    """The run folder of `path` when it is one of its complete checkpoints (`--resume` of one)."""
    if (path / "COMPLETE").is_file() and path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def plan(cfg: dict, explicit: set) -> Plan:
    """Decide, reading only, what this launch does (see the module docstring)."""
    value = cfg.get("resume")
    results_dir = Path(cfg["results_dir"])
    named = results_dir / cfg["run_name"] if cfg.get("run_name") else None
    for folder in (named, Path(value) if value not in (None, RESUME_LATEST) else None):
        if folder is not None:
            check_not_in_use(folder)
    if value is None:
        if named is not None and _holds_a_run(named) and not cfg.get("overwrite"):
            raise UserError(f"{named} already holds a run; pass --resume to continue it, --overwrite to "
                            f"replace it, or choose another --run-name")
        _check_writable(results_dir)
        return Plan("new", named, cfg)
    if value == RESUME_LATEST:
        if named is None:
            named = _matching_run(results_dir, cfg)
            if named is None:
                _check_writable(results_dir)
                return Plan("new", None, cfg, note=f"--resume: no run in {results_dir} matches this "
                                                   f"configuration: starting a new one")
        elif not _holds_a_run(named):
            _check_writable(results_dir)
            return Plan("new", named, cfg, note=f"--resume: no run {named} yet: starting it")
        return _continue(named, cfg)
    path = Path(value)
    checkpoint_of = _run_of_checkpoint(path)
    if checkpoint_of is not None:
        chosen = _continue(checkpoint_of, cfg, explicit)
        if chosen.action == "resume":
            chosen.checkpoints = [path]
        return chosen
    if not path.is_dir():
        raise UserError(f"--resume {value}: no such results folder")
    if not (path / "config.yaml").exists() and not checkpoint.complete_checkpoints(path):
        raise UserError(f"--resume {value}: no complete checkpoint under {checkpoint.checkpoint_dir(path)}")
    chosen = _continue(path, cfg, explicit)
    if chosen.action == "restart":
        raise UserError(f"--resume {value}: no complete checkpoint under {checkpoint.checkpoint_dir(path)}")
    return chosen


def _check_writable(results_dir: Path) -> None:
    """The nearest existing folder on the way to results_dir must be writable."""
    probe = results_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"--results-dir {results_dir}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--results-dir {results_dir}: cannot write in {probe} (permission denied)")
