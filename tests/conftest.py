"""Shared fixtures: launching real multi-rank jobs under mpirun with a hard timeout."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def mpi_env() -> dict:
    """Environment for child jobs: root-safe Open MPI, no UCX noise, repo importable."""
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_osc="^ucx",
        OMPI_MCA_pml="^ucx",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    return env


def mpirun_command(np_: int, argv: list) -> list:
    """The mpirun line the tests use: oversubscribed, so 4 ranks run on 2 cores."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise RuntimeError("mpirun not found: run the README's set-up command first")
    return [mpirun, "-np", str(np_), "--oversubscribe", "--bind-to", "none", *argv]


def run_mpi(np_: int, argv: list, timeout: float = 300, check: bool = True, cwd=None):
    """Run `argv` (e.g. [sys.executable, script, args...]) on np_ ranks; fail loudly on timeout."""
    cmd = mpirun_command(np_, argv)
    try:
        proc = subprocess.run(cmd, env=mpi_env(), cwd=cwd or REPO, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun -np {np_} timed out after {timeout}s: {' '.join(map(str, argv))}\n"
                    f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    if check and proc.returncode != 0:
        pytest.fail(f"mpirun -np {np_} exited {proc.returncode}: {' '.join(map(str, argv))}\n"
                    f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def mpirun():
    """`mpirun(np, argv, timeout=...)` -> CompletedProcess; see run_mpi."""
    return run_mpi


PYTHON = sys.executable
