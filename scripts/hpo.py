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
same parameters, so the study still ends with --n-trials trials. At the end: trials.csv,
trials.json, best.yaml (a preset: `main.py --yaml-config <study-dir>/best.yaml --config best`)
and search.png in the study folder.
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
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

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
    import main

    layer = config._normalise_layer(preset, source)
    cfg = config.with_agent_defaults(config.merge(config.defaults(), layer), set(layer))
    cfg["preset"] = PRESET
    config.validate(cfg)
    main.check_choices(cfg)
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


def is_stale(trial, heartbeats: Path, stale_after: float) -> bool:
    """A RUNNING trial whose worker is gone: a dead process on this host, or a heartbeat older
    than stale_after (another host: its worker touches the file every poll)."""
    path = heartbeats / f"{trial.number}.json"
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - start > stale_after
    if info.get("host") == socket.gethostname() and not _alive(int(info["pid"]), info.get("start")):
        return True
    return age > stale_after


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


class Worker:
    def __init__(self, args, space: dict, fixed: dict):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        self.args, self.space, self.fixed = args, space, fixed
        self.dir = Path(args.study_dir).resolve()
        for sub in ("trials", "presets", "logs", "heartbeats"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        journal = str(Path(args.storage).resolve()) if args.storage else str(self.dir / "journal.log")
        self.storage = JournalStorage(JournalFileBackend(journal))
        self.ask_lock = JournalFileOpenLock(journal + ".ask")  # count-then-ask is atomic across workers
        pruner = {"asha": lambda: optuna.pruners.SuccessiveHalvingPruner(
                      min_resource=args.min_resource, reduction_factor=args.reduction_factor),
                  "hyperband": lambda: optuna.pruners.HyperbandPruner(
                      min_resource=args.min_resource, reduction_factor=args.reduction_factor),
                  "none": optuna.pruners.NopPruner}[args.pruner]()
        self.study = optuna.create_study(
            study_name=args.study_name or self.dir.name, storage=self.storage, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=args.seed, constant_liar=True), pruner=pruner,
            load_if_exists=True)
        self._check_same_study()
        self.dists = distributions(space)
        self.label, self.objective = OBJECTIVES[args.objective]

    def _check_same_study(self) -> None:
        """A study continues only with the space, fixed options and objective it started with."""
        identity = {"space": self.space, "fixed": self.fixed, "objective": self.args.objective}
        stored = self.study.user_attrs.get("identity")
        if stored is None:
            self.study.set_user_attr("identity", json.loads(json.dumps(identity)))
        elif stored != json.loads(json.dumps(identity)):
            diff = [k for k in identity if json.loads(json.dumps(identity[k])) != stored.get(k)]
            raise UserError(f"study {self.study.study_name!r} in {self.dir} was started with another "
                            f"{' and '.join(diff)}; give the same ones, or a new --study-dir")

    def next_trial(self):
        """Requeue abandoned trials, then ask for a new one unless the study has its trials."""
        self.ask_lock.acquire()
        try:
            requeue_stale(self.study, self.storage, self.dir / "heartbeats", self.args.stale_after)
            counted = [t for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get("abandoned")]
            if len(counted) >= self.args.n_trials:
                return None
            trial = self.study.ask(self.dists)
            write_heartbeat(self.dir / "heartbeats" / f"{trial.number}.json")
            return trial
        finally:
            self.ask_lock.release()

    def run(self) -> None:
        while (trial := self.next_trial()) is not None:
            try:
                self.run_trial(trial)
            except BaseException:  # interrupted (Ctrl-C, scancel): give the trial back at once
                self.ask_lock.acquire()
                try:
                    frozen = self.storage.get_trial(trial._trial_id)
                    if frozen.state.name == "RUNNING":
                        requeue(self.study, self.storage, frozen)
                finally:
                    self.ask_lock.release()
                raise

    def run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        n, started = trial.number, time.perf_counter()
        preset_file = self.dir / "presets" / f"{n}.yaml"
        preset_file.write_text(yaml.safe_dump({PRESET: trial_preset(self.fixed, trial.params)}, sort_keys=False))
        run_dir = self.dir / "trials" / str(n)
        cmd = [*shlex.split(self.args.launcher), sys.executable, str(REPO / "main.py"), "--yaml-config",
               str(preset_file), "--config", PRESET, "--results-dir", str(run_dir.parent), "--run-name", str(n)]
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        print(f"trial {n}: {params} -> {run_dir}", flush=True)
        heartbeat = self.dir / "heartbeats" / f"{n}.json"
        with open(self.dir / "logs" / f"{n}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        try:
            reported = 0
            while True:
                code = proc.poll()
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
        m = _read_metrics(run_dir / "metrics.json")
        if code != 0 or not m or not m.get("finished"):
            self.study.tell(trial, state=TrialState.FAIL)
            tail = (self.dir / "logs" / f"{n}.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
            print(f"trial {n}: failed (exit {code}): {tail[0]} [log: {self.dir / 'logs' / f'{n}.log'}]", flush=True)
            return
        value = self.objective(m["accuracy_matrix"])
        self.study.tell(trial, value)
        print(f"trial {n}: {self.label} {100 * value:.1f}% ({time.perf_counter() - started:.0f}s)", flush=True)


# --- results -------------------------------------------------------------------------------

def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("abandoned"):
            continue
        steps = sorted(t.intermediate_values)
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     "value": t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None),
                     "tasks": steps[-1] if steps else 0,
                     "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
                     **t.params, "retry_of": t.user_attrs.get("retry_of"), "folder": f"trials/{t.number}"})
    return rows


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
        params = " ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in worker.space)
        print(f"{r['number']:>5} {r['state']:<9} {value:>8} {r['tasks']:>5} {r['duration_s'] or 0:>7.1f}  {params}")
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
    p.add_argument("--seed", type=int, default=None, help="sampler seed (give each worker its own)")
    p.add_argument("--preset-name", default="best", help="name of the preset in best.yaml (default: best)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at a running trial")
    p.add_argument("--stale-after", type=float, default=300.0,
                   help="a running trial whose heartbeat is this old (s) was abandoned (default 300)")
    p.error = lambda message: (_ for _ in ()).throw(UserError(message))  # one line, exit 2
    args = p.parse_args(argv)
    if args.n_trials < 0 or args.min_resource < 1 or args.reduction_factor < 2 or args.poll <= 0 \
            or args.stale_after <= 0:
        raise UserError("--n-trials >= 0, --min-resource >= 1, --reduction-factor >= 2, --poll > 0 and "
                        "--stale-after > 0 are required")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    try:
        args, extra = parse_args(sys.argv[1:] if argv is None else argv)
        space, space_fixed = load_space(args.space)
        fixed = fixed_layer(space_fixed, extra, args.space)
        check_space(space, fixed)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        worker = Worker(args, space, fixed)
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
