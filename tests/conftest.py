"""Shared fixtures: launching real multi-rank jobs under mpirun with a hard timeout."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.mpirun import mpirun_env, mpirun_prefix, open_mpi_defaults

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
# What the jobs import besides the installed project: main.py (die.py, agent_provenance.py) and
# the tests' helper modules (pyproject.toml gives pytest itself the same two test folders).
JOB_PYTHONPATH = (REPO, TESTS, TESTS / "mpi_jobs")

# This process too: an mpi4py singleton in the single-process tests (the native buffer).
for _key, _value in open_mpi_defaults().items():
    os.environ.setdefault(_key, _value)


# mpirun's own start-up failing on a busy machine, before any rank ran: not the test's failure.
MPIRUN_START_FAILURES = ("The PMIx server's listener thread failed to start",)


def mpi_env() -> dict:
    """Environment for child jobs: common.mpirun's, with the tests' folders importable."""
    return mpirun_env(pythonpath=JOB_PYTHONPATH)


def mpirun_command(np_: int, argv: list) -> list:
    """The mpirun line the tests use (common.mpirun): oversubscribed, so 4 ranks run on 2 cores."""
    return [*mpirun_prefix(np_), *argv]


def run_mpi(np_: int, argv: list, timeout: float = 300, check: bool = True, cwd=None):
    """Run `argv` (e.g. [sys.executable, script, args...]) on np_ ranks; fail loudly on timeout."""
    cmd = mpirun_command(np_, argv)
    for _attempt in range(2):
        try:
            proc = subprocess.run(cmd, env=mpi_env(), cwd=cwd or REPO, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"mpirun -np {np_} timed out after {timeout}s: {' '.join(map(str, argv))}\n"
                        f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
        if proc.returncode == 0 or not any(m in proc.stderr for m in MPIRUN_START_FAILURES):
            break  # a launch that never started a rank (seen once in ~600 jobs) is tried once more
    if check and proc.returncode != 0:
        pytest.fail(f"mpirun -np {np_} exited {proc.returncode}: {' '.join(map(str, argv))}\n"
                    f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def run_torchrun(nproc: int, argv: list, timeout: float = 240):
    """`torchrun --standalone --nproc-per-node N argv...` with mpi_env() (PYTHONPATH and all)."""
    exe = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [exe, "--standalone", "--nproc-per-node", str(nproc), *map(str, argv)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun timed out after {timeout}s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited {proc.returncode}: {' '.join(cmd)}\nstdout:\n{proc.stdout[-4000:]}\n"
                    f"stderr:\n{proc.stderr[-4000:]}")
    return proc



@pytest.fixture
def mpirun():
    """`mpirun(np, argv, timeout=...)` -> CompletedProcess; see run_mpi."""
    return run_mpi


PYTHON = sys.executable


class OneRank:
    """The engine surface the rehearsal agents use (rank, world, MPI communicator, allreduce), for
    one process: agents driven directly by a test, without the task loop."""
    rank, world_size = 0, 1
    launch = SimpleNamespace(launcher="python", local_size=1)

    def __init__(self):
        import torch
        from mpi4py import MPI

        self.device, self.mpi_comm = torch.device("cpu"), MPI.COMM_SELF

    def allreduce_sum(self, t):
        return t
