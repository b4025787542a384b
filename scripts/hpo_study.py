"""What makes a search one study: what its trials depend on (recorded when it is created, checked
for every worker that joins), its workers (each its own sampler stream), and its trial folders
(each records the trial it belongs to).

Trials of one study are compared with each other, so everything that changes a trial's result
besides its parameters must be the same for all of them: the space, the fixed options, the
objective, the launcher and the world size it gives (the LR is scaled by the world size), and
the code. A worker that would change any of them is refused, naming what differs.

Two workers with one sampler seed propose the same points (the TPE sampler's start-up draws do
not look at the study), and so does a requeued Slurm array task. So a worker takes a number from
the study when it joins (under the study's ask lock: no two get the same one, a restart gets a
new one), and its sampler is seeded by the study's seed and that number.

A trial folder is main.py's run folder; `hpo_trial.json` in it names the study (a random id made
when the study is created) and the trial (number, parameters). A folder the journal does not
know (another study's, or one left from before the journal was replaced) is never read.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np

RECORD = "hpo_trial.json"
MPI_LAUNCHERS = ("mpirun", "mpiexec", "orterun", "prterun", "mpiexec.hydra")


# --- identity ------------------------------------------------------------------------------

def code_version(repo: Path) -> str:
    """The git commit of the checkout main.py runs from, else the installed package's version."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode == 0 and proc.stdout.strip():
            return f"git {proc.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"rehearsal-trainer {importlib.metadata.version('rehearsal-trainer')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _flag(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the last of `names` in args: `-n 2`, `-n=2`, `--ntasks=2`, `-n2` (one letter)."""
    value = None
    for i, tok in enumerate(args):
        for name in names:
            if tok == name and i + 1 < len(args):
                value = args[i + 1]
            elif tok.startswith(name + "="):
                value = tok[len(name) + 1:]
            elif len(name) == 2 and tok.startswith(name) and tok[2:].isdigit():
                value = tok[2:]
    return value


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else None


def world_size(launcher: list[str], environ=os.environ) -> int | None:
    """Ranks of a trial started with this launcher prefix; None where it cannot be told (the
    launcher decides from its host list or allocation)."""
    if not launcher:
        return 1
    program, args = Path(launcher[0]).name, launcher[1:]
    if program in MPI_LAUNCHERS:
        return _count(_flag(args, ("-np", "--np", "-n", "--n", "-c")))
    if program == "srun":  # inside an allocation, srun without -n starts SLURM_NTASKS tasks
        return _count(_flag(args, ("-n", "--ntasks")) or environ.get("SLURM_NTASKS"))
    if program == "horovodrun":
        return _count(_flag(args, ("-np", "--num-proc")))
    if program == "torchrun":
        per_node = _count(_flag(args, ("--nproc-per-node", "--nproc_per_node")))
        nodes = _count(_flag(args, ("--nnodes",)) or "1")
        return per_node * nodes if per_node and nodes else None
    return None


def describe_launcher(launcher: list[str], size: int | None) -> str:
    ranks = "ranks not known" if size is None else f"{size} rank{'s' if size != 1 else ''}"
    return f"{shlex.join(launcher)!r} ({ranks})" if launcher else f"no launcher ({ranks})"


def identity(space: dict, fixed: dict, objective: str, launcher: list[str], repo: Path) -> dict:
    """What the study's trials depend on besides their parameters, as stored in the journal."""
    return json.loads(json.dumps({"space": space, "fixed": fixed, "objective": objective, "launcher": launcher,
                                  "world_size": world_size(launcher), "code": code_version(repo)}))


def _same_launcher(a: dict, b: dict) -> bool:
    """The same program and world size (other flags, such as host lists and binding, change where
    the ranks run, not what they compute); the same command when the world size is not known."""
    if a.get("world_size") is None or b.get("world_size") is None:
        return a.get("launcher") == b.get("launcher")
    program = [Path(x["launcher"][0]).name if x["launcher"] else "" for x in (a, b)]
    return program[0] == program[1] and a["world_size"] == b["world_size"]


def difference(stored: dict, mine: dict) -> list[str]:
    """What differs between a study's recorded identity and a joining worker's, each said in a
    few words; empty when it may join."""
    out = []
    for key, what in (("space", "space"), ("fixed", "fixed options")):
        if stored.get(key) != mine[key]:
            out.append(what)
    if stored.get("objective") != mine["objective"]:
        out.append(f"objective ({stored.get('objective')!r}; this worker's: {mine['objective']!r})")
    if "launcher" not in stored:
        out.append("launcher (an older hpo.py recorded none)")
    elif not _same_launcher(stored, mine):
        out.append(f"launcher ({describe_launcher(stored['launcher'], stored.get('world_size'))}; this worker's: "
                   f"{describe_launcher(mine['launcher'], mine['world_size'])})")
    if stored.get("code") != mine["code"]:
        out.append(f"code version ({stored.get('code') or 'not recorded'}; this worker's: {mine['code']})")
    return out


def new_study_seed() -> int:
    return secrets.randbelow(2**32)


# --- workers -------------------------------------------------------------------------------

def worker_seed(study_seed: int, number: int) -> int:
    """The sampler seed of the study's worker `number`: the study's seed for the first (so a
    one-worker search is reproduced by its --seed), a seed drawn from both for the others."""
    if number == 0:
        return study_seed
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


def whoami(environ=os.environ) -> dict:
    """Where this worker runs, for the study's record of its workers (the Slurm job, array task
    and restart count when there is one)."""
    slurm = {k: environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                     "SLURM_RESTART_COUNT") if k in environ}
    return {"host": socket.gethostname(), "pid": os.getpid(), **({"slurm": slurm} if slurm else {})}


# --- trial folders -------------------------------------------------------------------------

def write_record(run_dir: Path, study_name: str, study_uid: str, number: int, params: dict) -> None:
    """The trial's identity in its folder (written once main.py has claimed the folder: main.py
    refuses to start a new run in a folder that already holds files)."""
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps({"study": study_name, "study_uid": study_uid, "number": number,
                               "params": params}, indent=2) + "\n")
    os.replace(tmp, run_dir / RECORD)


def trial_folders(trials_dir: Path) -> list[Path]:
    """The entries of trials/, listed before the journal is read: a folder is made only after
    its trial is in the journal, so a journal read afterwards knows every trial listed."""
    return sorted(trials_dir.iterdir(), key=lambda p: (len(p.name), p.name)) if trials_dir.is_dir() else []


def unmatched_folders(entries: list[Path], study_uid: str | None, known: dict[int, dict],
                      running: set[int]) -> list[Path]:
    """The entries that are not this study's trials: no record naming this study, the trial
    number and its parameters as the journal has them. A folder with no record yet is a known
    trial's if that trial is running (its worker writes the record at its next look) or left
    no results (its worker was killed before main.py wrote any)."""
    out = []
    for entry in entries:
        number = int(entry.name) if entry.name.isdigit() else None
        try:
            record = json.loads((entry / RECORD).read_text())
        except (OSError, ValueError):
            record = None
        if record is None:
            if not (entry.is_dir() and number in known
                    and (number in running or not (entry / "metrics.json").exists())):
                out.append(entry)
            continue
        if not (study_uid is not None and isinstance(record, dict) and record.get("study_uid") == study_uid
                and record.get("number") == number and number in known
                and json.loads(json.dumps(known[number])) == record.get("params")):
            out.append(entry)
    return out


def move_aside(entries: list[Path], study_dir: Path, stamp: str) -> Path:
    """Move folders the journal does not know to <study-dir>/unmatched-<stamp>/ (kept, never read)."""
    target = study_dir / f"unmatched-{stamp}"
    target.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        shutil.move(str(entry), str(target / entry.name))
    return target
