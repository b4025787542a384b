"""How this project starts a job on one machine under Open MPI's mpirun: one command prefix and
one environment, for the tests (tests/conftest.py), the benchmarks (benchmarks/measure.py,
benchmarks/bench_buffer.py) and scripts/sanitize_native.sh. The user-facing launchers
(scripts/launch/) are for clusters too and leave Open MPI's settings to the user.

    python -m common.mpirun NP COMMAND [ARGS...]     # e.g. from a shell script

runs COMMAND on NP ranks with both (mpirun replaces the Python process).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Mapping


def find_mpirun() -> str:
    """The mpirun next to this Python (the Open MPI that scripts/setup.sh puts in .venv), else
    the one on PATH."""
    beside = Path(sys.executable).parent / "mpirun"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpirun")
    if found is None:
        raise RuntimeError("mpirun not found: run scripts/setup.sh (Open MPI inside .venv) or put an MPI on PATH")
    return found


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mpirun_prefix(ranks: int | None) -> list[str]:
    """``mpirun -np RANKS --oversubscribe --bind-to none`` (+ ``--allow-run-as-root`` as root):
    more ranks than cores are allowed (4 ranks on a 2-core machine), and no rank is pinned to
    one core (torch's threads would all share it). The command to run follows; with ``ranks``
    None there is no -np, for app contexts (``-np 1 CMD : -np 1 CMD``) that each give theirs."""
    argv = [find_mpirun(), *(["-np", str(ranks)] if ranks is not None else []), "--oversubscribe", "--bind-to", "none"]
    if _as_root():
        argv.append("--allow-run-as-root")
    return argv


def open_mpi_defaults() -> dict:
    """Open MPI settings for a job on one machine, each applied only where the environment has
    none (a setting of the user's wins): OMPI_MCA_pml=^ucx and OMPI_MCA_osc=^ucx (a laptop, VM
    or container has no UCX hardware, and Open MPI would try UCX and warn or fail), and as root
    OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1, for what a job starts itself (an mpi4py singleton, an
    mpirun in an HPO trial's --launcher)."""
    out = {"OMPI_MCA_pml": "^ucx", "OMPI_MCA_osc": "^ucx"}
    if _as_root():
        out.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return out


def mpirun_env(base: Mapping[str, str] | None = None, pythonpath: Iterable = (),
               one_thread: bool = True) -> dict:
    """The environment for a job (under mpirun or a single process): ``base`` (default: this
    process's) with open_mpi_defaults(), OMP_NUM_THREADS=1 unless set (``one_thread``: ranks
    sharing a machine do not each start a thread per core), PYTHONUNBUFFERED=1 (a rank's output
    arrives in order, also when it dies), and ``pythonpath`` folders put first on PYTHONPATH
    (the installed project needs none)."""
    env = dict(os.environ if base is None else base)
    for key, value in open_mpi_defaults().items():
        env.setdefault(key, value)
    if one_thread:
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    return env


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m common.mpirun NP COMMAND [ARGS...]")
    cmd = [*mpirun_prefix(int(argv[0])), *argv[1:]]
    os.execve(cmd[0], cmd, mpirun_env())


if __name__ == "__main__":
    main()
