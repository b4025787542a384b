#!/usr/bin/env python
"""Hyperparameter search over main.py options, run as one or many batch jobs sharing one study.

    python scripts/hpo.py --space scripts/hpo_spaces/nil_cpp.yaml --study-dir hpo/nil_cpp --n-trials 16
    python scripts/hpo.py --space SPACE.yaml --study-dir DIR --n-trials 30 --launcher "mpirun -np 2" \
        -- --epochs 5 --seed 1                  # flags after -- are fixed for every trial
    # more workers: start the same command again (another shell, node, or Slurm array task)

The space file (YAML) has `space:` (parameter -> distribution) and optionally `fixed:` (main.py
options for every trial, written as in a config.yaml preset). A parameter is any main.py option
(`lr`, `batch_size`, `momentum`, ...) or a key of a dict option (`agent_config.rehearsal_ratio`,
`model_config.hidden`, ...):

    lr: {type: loguniform, low: 0.005, high: 0.2}           # also: uniform; float with log/step
    batch_size: {type: int, low: 16, high: 64, step: 16}      # int: log or step optional
    agent_config.num_representatives: {type: categorical, choices: [8, 16, 32, 64]}

Optuna drives the search (TPE sampler, ASHA pruner over tasks); the study lives in an Optuna
journal file (`<study-dir>/journal.log` unless --storage), so workers on different nodes share
it through the file system with no database server. Every trial is a real main.py run in
`<study-dir>/trials/<trial number>`, polled after each task (its metrics.json) and stopped
early when the pruner says so. A killed worker's trial is found on restart (its heartbeat file
names a dead process, or is older than --stale-after), marked failed and queued again with the
same parameters, so the study still ends with --n-trials trials. A trial that diverges (main.py
exits 3, its metrics.json says "diverged") is failed and not run again. At the end: trials.csv,
trials.json, best.yaml (a preset: `main.py --yaml-config <study-dir>/best.yaml --config best`)
and search.png in the study folder.

A study records what its trials depend on when it is created (hpo_study.py: space, fixed
options, objective, launcher and world size, code version, seed) and refuses a worker that
differs; its journal is checked before a worker joins (hpo_journal.py; --repair drops a damaged
end); trial folders the journal does not know are never read.
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import io
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

import hpo_journal  # the scripts beside this one
import hpo_study
from common.errors import UserError, one_line
from trainer import config, metrics
from trainer.results import atomic_write_text

REPO = Path(__file__).resolve().parent.parent  # main.py and the trials' working folder

OBJECTIVES = {"final": ("final average accuracy", metrics.final_average_accuracy),
              "incremental": ("average incremental accuracy", metrics.average_incremental_accuracy)}
SPEC_KEYS = {"float": {"low", "high", "log", "step"}, "uniform": {"low", "high"},
             "loguniform": {"low", "high"}, "int": {"low", "high", "log", "step"},
             "categorical": {"choices"}}
RESERVED = ("results_dir", "run_name", "resume", "overwrite")  # the search owns where trials go
PRESET = "trial"


# --- the search space ------------------------------------------------------------------------

def load_space(path: str) -> tuple[dict, dict]:
    """(space, fixed layer) from the space file; any problem is one UserError line."""
    try:
        data = config.load_presets(path)  # config.yaml's checks and messages: found, readable, YAML
    except UserError as exc:
        if "must map preset names" not in str(exc):
            raise
        raise UserError(f"{path} must be a mapping with 'space:' (and optionally 'fixed:') mappings") from None
    unknown = set(data) - {"space", "fixed"}
    if unknown:
        raise UserError(f"{path}: unknown section {sorted(unknown)[0]!r}; valid sections: space, fixed")
    space = data.get("space")
    if not space:
        raise UserError(f"{path}: no parameters under 'space:' (e.g. lr: {{type: loguniform, low: 0.005, high: 0.2}})")
    return space, data.get("fixed", {})


def check_spec(name: str, spec) -> None:
    """One parameter's distribution: a known type, its keys, a non-empty range."""
    where = f"search space parameter {name!r}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise UserError(f"{where} must be a mapping with a type, e.g. {{type: loguniform, low: 0.005, high: 0.2}}; "
                        f"got {spec!r}")
    kind = spec["type"]
    if kind not in SPEC_KEYS:
        raise UserError(f"{where}: unknown type {kind!r}; valid types: {', '.join(SPEC_KEYS)}")
    extra = set(spec) - SPEC_KEYS[kind] - {"type"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(extra)[0]!r} for type {kind}; "
                        f"valid keys: {', '.join(sorted(SPEC_KEYS[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if any(not (c is None or isinstance(c, (bool, int, float, str))) for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}")
        return
    number = int if kind == "int" else (int, float)
    for key in ("low", "high"):
        value = spec.get(key)
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{where}: {key} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if spec["low"] >= spec["high"]:
        raise UserError(f"{where}: empty range, low {spec['low']} must be below high {spec['high']}")
    log = kind == "loguniform" or spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    if log and spec["low"] <= 0:
        raise UserError(f"{where}: a log scale needs low > 0, got {spec['low']}")
    if "step" in spec:
        step = spec["step"]
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0:
            what = "integer" if kind == "int" else "number"
            raise UserError(f"{where}: step must be a positive {what}, got {step!r}")
        if log:
            raise UserError(f"{where}: step and log cannot be combined")


def distributions(space: dict) -> dict:
    """Optuna distributions for `study.ask`, so a trial's parameters are drawn when it is created."""
    from optuna import distributions as d

    out = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            out[name] = d.CategoricalDistribution(spec["choices"])
        elif kind == "int":
            out[name] = d.IntDistribution(spec["low"], spec["high"], log=spec.get("log", False),
                                          step=spec.get("step", 1))
        else:
            out[name] = d.FloatDistribution(float(spec["low"]), float(spec["high"]),
                                            log=kind == "loguniform" or spec.get("log", False), step=spec.get("step"))
    return out


def trial_preset(fixed: dict, params: dict) -> dict:
    """The preset of one trial: the fixed options, then its parameters (`a.b` sets key b of option a)."""
    preset = {k: dict(v) if isinstance(v, dict) else v for k, v in fixed.items()}
    for name, value in params.items():
        option, _, key = name.partition(".")
        if key:
            preset[option] = {**preset.get(option, {}), key: value}
        else:
            preset[option] = value
    return preset


def check_point(preset: dict, source: str) -> dict:
    """Resolve a trial's preset as main.py would (names, types, ranges, agent options), in process."""
    from trainer import cli

    layer = config._normalise_layer(preset, source)
    cfg = config.with_agent_defaults(config.merge(config.defaults(), layer), set(layer))
    cfg["preset"] = PRESET
    config.validate(cfg)
    cli.check_choices(cfg)
    return cfg


def check_space(space: dict, fixed: dict) -> None:
    """Every parameter names a real option or dict key, and each of its extreme values is one
    main.py accepts: refused here, before any trial starts."""
    for name, spec in space.items():
        if not isinstance(name, str) or not name:
            raise UserError(f"search space parameter names must be option names, got {name!r}")
        option, dot, key = name.partition(".")
        if option not in config.BY_NAME:
            close = __import__("difflib").get_close_matches(option, config.BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"search space parameter {name!r}: unknown main.py option {option!r}{hint}")
        if option in RESERVED:
            raise UserError(f"search space parameter {name!r}: {option} is set by hpo.py for each trial")
        is_dict = config.BY_NAME[option].kind is dict
        if dot and (not is_dict or not key):
            raise UserError(f"search space parameter {name!r}: only dict options take a key "
                            f"({', '.join(config.DICT_OPTIONS)})")
        if is_dict and not dot:
            raise UserError(f"search space parameter {name!r}: search one key of it, e.g. {option}.KEY")
        check_spec(name, spec)
    base = {name: _values(spec)[0] for name, spec in space.items()}
    for name, spec in space.items():  # one parameter at a time at each of its extremes: agent x its keys too
        for value in _values(spec):
            check_point(trial_preset(fixed, {**base, name: value}), f"the search space ({name}={value!r})")


def _values(spec: dict) -> list:
    return list(spec["choices"]) if spec["type"] == "categorical" else [spec["low"], spec["high"]]


def fixed_layer(space_fixed: dict, extra: list[str], path: str) -> dict:
    """The options every trial shares: the space file's `fixed:`, then the flags after `--`
    (`--config NAME` there starts from that preset of --yaml-config)."""
    parsed = vars(config.build_parser().parse_args(extra))
    yaml_path, preset_name = parsed.pop("yaml_config"), parsed.pop("preset")
    layers = []
    if preset_name is not None:
        presets = config.load_presets(yaml_path)
        if preset_name not in presets:
            raise UserError(f"no preset {preset_name!r} in {yaml_path}; valid presets: {', '.join(presets)}")
        layers.append(config._normalise_layer(presets[preset_name], f"preset {preset_name!r} of {yaml_path}"))
    layers.append(config._normalise_layer(space_fixed, f"'fixed:' of {path}"))
    layers.append(config._normalise_layer(parsed, "the flags after --"))
    fixed = config.merge(*layers)
    for name in RESERVED:
        if name in fixed:
            raise UserError(f"{name} is set by hpo.py for each trial (trials go to <study-dir>/trials); leave it out")
    return fixed


# --- workers, heartbeats, stale trials -----------------------------------------------------

def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), so a reused pid is not taken for the old one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z" and (start is None or _proc_start(pid) == start)


def write_heartbeat(path: Path) -> None:
    atomic_write_text(path, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                        "start": _proc_start(os.getpid())}))


def _worker_gone(path: Path, stale_after: float) -> bool | None:
    """Whether the worker that writes this heartbeat has stopped: a dead process on this host,
    or a file older than stale_after (another host: its worker touches the file every poll);
    None when there is no readable heartbeat."""
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname() and not _alive(int(info["pid"]), info.get("start")):
        return True
    return age > stale_after


def is_stale(trial, heartbeats: Path, stale_after: float) -> bool:
    """A RUNNING trial whose worker is gone (a trial with no heartbeat: once it is older than
    stale_after)."""
    gone = _worker_gone(heartbeats / f"{trial.number}.json", stale_after)
    if gone is None:
        start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - start > stale_after
    return gone


def live_workers(heartbeats: Path, stale_after: float) -> list[str]:
    """The trials a live worker is running now, from their heartbeats (removed when a trial ends)."""
    out = []
    for path in sorted(heartbeats.glob("*.json")) if heartbeats.is_dir() else []:
        if _worker_gone(path, stale_after) is False:
            info = json.loads(path.read_text())
            out.append(f"trial {path.stem} (pid {info.get('pid')} on {info.get('host')})")
    return out


def requeue_stale(study, storage, heartbeats: Path, stale_after: float) -> None:
    """Mark abandoned trials failed and queue their parameters again (called under the ask lock)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(t, heartbeats, stale_after):
            requeue(study, storage, t)
            print(f"hpo.py: trial {t.number} was left running by a stopped worker: queued again", flush=True)


def requeue(study, storage, trial) -> None:
    """Fail a RUNNING trial, left out of the count (`abandoned`), and queue its parameters again."""
    from optuna.trial import TrialState

    storage.set_trial_user_attr(trial._trial_id, "abandoned", True)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this worker dies (even by SIGKILL), so no orphan trains on."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """End the trial's whole process group (mpirun and its ranks)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def _read_metrics(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Outcome:
    """How a trial's run ended, as the study records it: `complete` (value: the objective),
    `fail`, or `diverged` (failed in Optuna, never a low accuracy, not run again); note: why."""
    state: str
    value: float | None = None
    note: str = ""


DIVERGED_EXIT = 3  # main.py's exit status when training diverged (metrics.json: "status": "diverged")


def diverged_note(m: dict | None) -> str:
    """'diverged at task T epoch E step S: reason' from metrics.json's "diverged" record (1-based)."""
    info = (m or {}).get("diverged")
    if not isinstance(info, dict):
        return "diverged (metrics.json says no more)"
    where = " ".join(f"{k} {info[k]}" for k in ("task", "epoch", "step") if k in info)
    why = info.get("reason") or (f"loss {info['loss']}" if "loss" in info else "")
    return f"diverged at {where}" + (f": {why}" if why else "")


def classify(code: int, m: dict | None, objective) -> Outcome:
    """The outcome of a trial whose main.py has ended with exit status `code`, its metrics.json `m`."""
    if (m or {}).get("status") == "diverged" or code == DIVERGED_EXIT:
        return Outcome("diverged", note=diverged_note(m))
    if code != 0 or not m or not m.get("finished"):
        return Outcome("fail", note=f"exit {code}" + ("" if m and m.get("finished") else ", unfinished"))
    return Outcome("complete", value=objective(m["accuracy_matrix"]))


def prepare_journal(args, study_dir: Path, journal: Path, study_name: str) -> None:
    """Before anything is written: the journal intact (or repaired, with --repair), and every
    folder under trials/ one of the journal's trials of this study (--repair moves the others
    aside; otherwise they are refused)."""
    if args.repair:
        live = live_workers(study_dir / "heartbeats", args.stale_after)
        if live:
            raise UserError(f"--repair needs every worker of the study stopped; still running: {', '.join(live)}")
        said = hpo_journal.repair(journal) or (f"the journal {journal} is intact: nothing to repair"
                                               if journal.exists() else f"no journal at {journal} yet")
        print(f"hpo.py: {said}", flush=True)
    entries = hpo_study.trial_folders(study_dir / "trials")
    replay = hpo_journal.check(journal)
    study = next((s for s in replay.get_all_studies() if s.study_name == study_name), None) if replay else None
    trials = replay.get_all_trials(study._study_id, None) if study else []
    unmatched = hpo_study.unmatched_folders(entries, study.user_attrs.get("uid") if study else None,
                                            {t.number: t.params for t in trials},
                                            {t.number for t in trials if t.state.name == "RUNNING"})
    if not unmatched:
        return
    names = ", ".join(p.name for p in unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
    if args.repair:
        target = hpo_study.move_aside(unmatched, study_dir, time.strftime("%Y%m%d-%H%M%S"))
        print(f"hpo.py: moved {len(unmatched)} trial folder(s) the journal does not know ({names}) to {target}",
              flush=True)
        return
    raise UserError(f"{study_dir / 'trials'} holds trial folders that study {study_name!r} of the journal {journal} "
                    f"does not know ({names}: another study's, or the journal was replaced); move them away, "
                    f"run with --repair to move them aside, or use a new --study-dir")


def _writable_journal(journal: Path) -> None:
    """The journal can be appended to, and its folder takes the lock files Optuna and the workers make."""
    try:
        open(journal, "ab").close()
    except OSError as exc:
        raise UserError(f"cannot write the study's journal {journal}: {exc.strerror or exc}") from None
    if not os.access(journal.parent, os.W_OK):
        raise UserError(f"cannot write the study's journal's lock files in {journal.parent}: permission denied")


def open_study(args, space: dict, fixed: dict) -> Worker:
    """Check the study folder and its journal, then open (or create) the study and join it."""
    study_dir = Path(args.study_dir).resolve()
    if study_dir.exists() and not study_dir.is_dir():
        raise UserError(f"--study-dir {args.study_dir} is a file; give a folder (it holds the journal, trials and "
                        f"results)")
    journal = Path(args.storage).resolve() if args.storage else study_dir / "journal.log"
    if journal.is_dir():
        raise UserError(f"--storage {journal} is a folder; give the journal's file name")
    study_name = args.study_name or study_dir.name
    prepare_journal(args, study_dir, journal, study_name)
    if args.storage:  # a journal elsewhere first: an unwritable one leaves no study folder behind
        _writable_journal(journal)
    try:
        for sub in ("trials", "presets", "logs", "heartbeats"):
            (study_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the study folder {exc.filename or study_dir}: {exc.strerror or exc}") from None
    _writable_journal(journal)
    return Worker(args, space, fixed, study_dir, journal, study_name)


class Worker:
    def __init__(self, args, space: dict, fixed: dict, study_dir: Path, journal: Path, study_name: str):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        self.args, self.space, self.fixed, self.dir = args, space, fixed, study_dir
        self.storage = JournalStorage(JournalFileBackend(str(journal)))
        self.ask_lock = JournalFileOpenLock(f"{journal}.ask")  # count-then-ask is atomic across workers
        pruner = {"asha": lambda: optuna.pruners.SuccessiveHalvingPruner(
                      min_resource=args.min_resource, reduction_factor=args.reduction_factor),
                  "hyperband": lambda: optuna.pruners.HyperbandPruner(
                      min_resource=args.min_resource, reduction_factor=args.reduction_factor),
                  "none": optuna.pruners.NopPruner}[args.pruner]()
        self.study = optuna.create_study(study_name=study_name, storage=self.storage, direction="maximize",
                                         pruner=pruner, load_if_exists=True)
        self.number, seed = self._join()
        self.study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        self.dists = distributions(space)
        self.label, self.objective = OBJECTIVES[args.objective]
        print(f"hpo.py: worker {self.number} of study {study_name!r} (sampler seed {seed})", flush=True)

    @contextmanager
    def asking(self):
        self.ask_lock.acquire()
        try:
            yield
        finally:
            self.ask_lock.release()

    def _join(self) -> tuple[int, int]:
        """Record the study's identity if it is new, else refuse to join one that differs; take
        this worker's number. Returns (number, sampler seed)."""
        mine = hpo_study.identity(self.space, self.fixed, self.args.objective, shlex.split(self.args.launcher), REPO)
        with self.asking():
            attrs = self.study.user_attrs
            stored = attrs.get("identity")
            if stored is None:
                self.study.set_user_attr("identity", mine)
                self.study.set_user_attr("uid", uuid.uuid4().hex)
                self.study.set_user_attr("seed", self.args.seed if self.args.seed is not None
                                         else hpo_study.new_study_seed())
            else:
                differs = hpo_study.difference(stored, mine)
                if self.args.seed is not None and attrs.get("seed") != self.args.seed:
                    differs.append(f"seed ({attrs.get('seed')}; this worker's: {self.args.seed}; leave --seed out "
                                   f"to join)")
                if differs:
                    raise UserError(f"study {self.study.study_name!r} in {self.dir} was started with another "
                                    f"{' and another '.join(differs)}; give the same ones, or a new --study-dir")
            attrs = self.study.user_attrs
            number = sum(1 for k in attrs if k.startswith("worker:"))
            self.study.set_user_attr(f"worker:{number}", hpo_study.whoami())
            self.uid = attrs["uid"]
            return number, hpo_study.worker_seed(attrs["seed"], number)

    def next_trial(self):
        """Requeue abandoned trials, then ask for a new one unless the study has its trials (a
        queued retry is always run: it takes the place of the abandoned trial in the count)."""
        from optuna.trial import TrialState

        with self.asking():
            requeue_stale(self.study, self.storage, self.dir / "heartbeats", self.args.stale_after)
            trials = self.study.get_trials(deepcopy=False)
            counted = [t for t in trials if not t.user_attrs.get("abandoned")]
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if len(counted) >= self.args.n_trials and not waiting:
                return None
            trial = self.study.ask(self.dists)
            write_heartbeat(self.dir / "heartbeats" / f"{trial.number}.json")
            return trial

    def run(self) -> None:
        while (trial := self.next_trial()) is not None:
            try:
                self.run_trial(trial)
            except BaseException:  # interrupted (Ctrl-C, scancel): give the trial back at once
                with self.asking():
                    frozen = self.storage.get_trial(trial._trial_id)
                    if frozen.state.name == "RUNNING":
                        requeue(self.study, self.storage, frozen)
                raise
            finally:
                (self.dir / "heartbeats" / f"{trial.number}.json").unlink(missing_ok=True)

    def run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        n, started = trial.number, time.perf_counter()
        run_dir = self.dir / "trials" / str(n)
        if run_dir.exists():  # not this trial's (prepare_journal refuses such folders at start): never read it
            trial.set_user_attr("note", f"{run_dir} existed before the trial started")
            self.study.tell(trial, state=TrialState.FAIL)
            print(f"trial {n}: not run: {run_dir} already exists and is not this trial's", flush=True)
            return
        preset_file = self.dir / "presets" / f"{n}.yaml"
        preset_file.write_text(yaml.safe_dump({PRESET: trial_preset(self.fixed, trial.params)}, sort_keys=False))
        cmd = [*shlex.split(self.args.launcher), sys.executable, str(REPO / "main.py"), "--yaml-config",
               str(preset_file), "--config", PRESET, "--results-dir", str(run_dir.parent), "--run-name", str(n)]
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        print(f"trial {n}: {params} -> {run_dir}", flush=True)
        heartbeat = self.dir / "heartbeats" / f"{n}.json"
        with open(self.dir / "logs" / f"{n}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        try:
            reported, recorded = 0, False
            while True:
                code = proc.poll()
                if not recorded and (run_dir / "config.yaml").exists():  # main.py has claimed the folder
                    hpo_study.write_record(run_dir, self.study.study_name, self.uid, n, trial.params)
                    recorded = True
                m = _read_metrics(run_dir / "metrics.json")
                rows = m["accuracy_matrix"] if m else []
                for step in range(reported + 1, len(rows) + 1):
                    value = self.objective(rows[:step])
                    trial.report(value, step)
                    reported = step
                    if step < m["num_tasks"] and trial.should_prune():
                        _stop(proc)
                        self.study.tell(trial, state=TrialState.PRUNED)
                        print(f"trial {n}: pruned after task {step} ({self.label} so far {100 * value:.1f}%, "
                              f"{time.perf_counter() - started:.0f}s)", flush=True)
                        return
                if code is not None:
                    break
                os.utime(heartbeat)
                time.sleep(self.args.poll)
        except BaseException:
            _stop(proc)
            raise
        outcome = classify(code, _read_metrics(run_dir / "metrics.json"), self.objective)
        took = f"{time.perf_counter() - started:.0f}s"
        if outcome.state == "complete":
            self.study.tell(trial, outcome.value)
            print(f"trial {n}: {self.label} {100 * outcome.value:.1f}% ({took})", flush=True)
            return
        log_file = self.dir / "logs" / f"{n}.log"
        if outcome.state == "diverged":
            trial.set_user_attr("diverged", outcome.note)
            self.study.tell(trial, state=TrialState.FAIL)
            print(f"trial {n}: {outcome.note} ({took}; failed, not run again) [log: {log_file}]", flush=True)
            return
        trial.set_user_attr("note", outcome.note)
        self.study.tell(trial, state=TrialState.FAIL)
        tail = log_file.read_text().strip().splitlines()[-1:] or ["(no output)"]
        print(f"trial {n}: failed ({outcome.note}): {tail[0]} [log: {log_file}]", flush=True)


# --- results -------------------------------------------------------------------------------

def trial_params(t) -> dict:
    """A trial's parameters; a queued retry not yet started has them as its fixed parameters."""
    return t.params or dict(t.system_attrs.get("fixed_params", {}))


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("abandoned"):
            continue
        steps = sorted(t.intermediate_values)
        diverged = t.user_attrs.get("diverged")
        value = t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None)
        rows.append({"number": t.number, "state": "diverged" if diverged else t.state.name.lower(),
                     "value": None if diverged else value,  # never a low accuracy
                     "tasks": steps[-1] if steps else 0,
                     "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
                     **trial_params(t), "retry_of": t.user_attrs.get("retry_of"), "folder": f"trials/{t.number}",
                     "note": diverged or t.user_attrs.get("note")})
    return rows


def _show(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def write_results(worker: Worker) -> bool:
    """trials.csv/json, best.yaml and search.png in the study folder; the table on stdout."""
    study, folder, label = worker.study, worker.dir, worker.label
    rows = trial_rows(study)
    if not rows:
        return False
    fields = list(rows[0]) + sorted({k for r in rows for k in r} - set(rows[0]))
    out = io.StringIO()
    writer = csv.DictWriter(out, fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "trials.csv", out.getvalue())
    atomic_write_text(folder / "trials.json", json.dumps(rows, indent=2))
    print(f"\nstudy {study.study_name}: {len(rows)} trials, objective: {label} (value of a pruned trial: "
          f"its last report)")
    print(f"{'trial':>5} {'state':<9} {'value %':>8} {'tasks':>5} {'time s':>7}  parameters")
    for r in rows:
        value = f"{100 * r['value']:.1f}" if r["value"] is not None else "-"
        params = " ".join(f"{k}={_show(r.get(k))}" for k in worker.space)
        note = f"  ({r['note']})" if r["note"] else ""
        print(f"{r['number']:>5} {r['state']:<9} {value:>8} {r['tasks']:>5} {r['duration_s'] or 0:>7.1f}  "
              f"{params}{note}")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        print("no trial has completed yet: no best configuration")
        return True
    best = study.best_trial
    preset = trial_preset(worker.fixed, best.params)
    header = (f"# Best of study {study.study_name!r} ({len(rows)} trials; {label} {100 * best.value:.2f}%, "
              f"trial {best.number}), written by scripts/hpo.py.\n"
              f"#   python main.py --yaml-config {folder / 'best.yaml'} --config {worker.args.preset_name}\n")
    atomic_write_text(folder / "best.yaml",
                      header + yaml.safe_dump({worker.args.preset_name: preset}, sort_keys=False))
    plot(rows, folder / "search.png", f"{study.study_name}: {label}")
    print(f"best: trial {best.number}, {label} {100 * best.value:.2f}%: "
          + " ".join(f"{k}={v}" for k, v in best.params.items()))
    print(f"wrote {folder / 'trials.csv'}, trials.json, best.yaml, search.png")
    return True


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Objective per trial (pruned: their last report), and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker, color, label in (("complete", "o", "tab:blue", "complete"),
                                        ("pruned", "x", "tab:orange", "pruned (at its last task)"),
                                        ("fail", "v", "tab:red", "failed (at its last task)")):
        pts = [(r["number"], 100 * r["value"]) for r in rows if r["state"] == state and r["value"] is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, label=label)
    best, xs, ys = -math.inf, [], []
    for r in sorted(rows, key=lambda r: r["number"]):
        if r["state"] == "complete":
            best = max(best, 100 * r["value"])
        if best > -math.inf:
            xs.append(r["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# --- command line --------------------------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Flags after -- are main.py options fixed for every trial.")
    p.add_argument("--space", required=True, help="YAML file: space: (parameters) and fixed: (options)")
    p.add_argument("--study-dir", required=True, help="folder of the study: journal, trials, results")
    p.add_argument("--n-trials", type=int, default=20, help="trials of the whole study, all workers together")
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default="final",
                   help="final average accuracy, or average incremental accuracy (default: final)")
    p.add_argument("--study-name", default=None, help="default: the study folder's name")
    p.add_argument("--storage", default=None, help="journal file (default: <study-dir>/journal.log)")
    p.add_argument("--launcher", default="", help="prefix of each trial's command, e.g. \"mpirun -np 2\" or "
                   "\"srun --ntasks 4\" (default: one process)")
    p.add_argument("--pruner", choices=("asha", "hyperband", "none"), default="asha",
                   help="early stopping over tasks (default: asha, Optuna's SuccessiveHalvingPruner)")
    p.add_argument("--min-resource", type=int, default=2, help="tasks before a trial can be pruned (default 2)")
    p.add_argument("--reduction-factor", type=int, default=2,
                   help="keep the best 1/N at each rung of tasks (default 2)")
    p.add_argument("--seed", type=int, default=None,
                   help="the study's seed, recorded when it is created (default: drawn then); each worker's sampler "
                        "is seeded by it and the worker's number in the study, so no two draw the same points")
    p.add_argument("--preset-name", default="best", help="name of the preset in best.yaml (default: best)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at a running trial")
    p.add_argument("--stale-after", type=float, default=300.0,
                   help="a running trial whose heartbeat is this old (s) was abandoned (default 300)")
    p.add_argument("--repair", action="store_true",
                   help="with every worker stopped: drop a damaged journal's first damaged line and all after it "
                        "(a copy is kept), move trial folders the journal does not know aside, then go on")
    p.error = lambda message: (_ for _ in ()).throw(UserError(message))  # one line, exit 2
    args = p.parse_args(argv)
    for flag, value, ok, need in (("--n-trials", args.n_trials, args.n_trials >= 1, "at least 1"),
                                  ("--min-resource", args.min_resource, args.min_resource >= 1, "at least 1"),
                                  ("--reduction-factor", args.reduction_factor, args.reduction_factor >= 2,
                                   "at least 2"),
                                  ("--poll", args.poll, args.poll > 0, "above 0"),
                                  ("--stale-after", args.stale_after, args.stale_after > 0, "above 0"),
                                  ("--seed", args.seed, args.seed is None or 0 <= args.seed < 2**32,
                                   "in [0, 2^32)")):
        if not ok:
            raise UserError(f"{flag} must be {need}, got {value}")
    check_launcher(args.launcher)
    return args, extra


def check_launcher(launcher: str) -> None:
    """The launcher prefix splits like a shell line and its program is there to run."""
    try:
        words = shlex.split(launcher)
    except ValueError as exc:
        raise UserError(f"--launcher {launcher!r}: {str(exc).lower()}") from None
    if words and shutil.which(words[0]) is None:
        raise UserError(f"--launcher {launcher!r}: no program {words[0]!r} on PATH")


def prepare(argv: list[str]) -> Worker:
    """Everything before the first trial: the arguments, the space, the journal, the study; a
    problem is a UserError, raised before anything is written."""
    args, extra = parse_args(argv)
    space, space_fixed = load_space(args.space)
    fixed = fixed_layer(space_fixed, extra, args.space)
    check_space(space, fixed)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_study(args, space, fixed)


def main(argv: list[str] | None = None) -> int:
    try:
        worker = prepare(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        print(f"hpo.py: error: {one_line(exc)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # scancel: requeue the trial, then end
    worker.run()
    write_results(worker)
    if not any(t.state.name == "COMPLETE" for t in worker.study.get_trials(deepcopy=False)):
        print("hpo.py: no trial completed (see the logs in the study folder)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
