"""Helpers to run main.py as a user would (one process or under mpirun) and read its results."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, mpi_env, mpirun_command, run_mpi


def run_main(args, results_dir: Path, name: str, ranks: int = 1, timeout: float = 240, check=True):
    """Run `main.py args` into results_dir/name; returns (CompletedProcess, run folder)."""
    argv = [sys.executable, "main.py", *args, "--results-dir", str(results_dir), "--run-name", name]
    if ranks == 1:
        try:
            proc = subprocess.run(argv, cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"main.py {' '.join(args)} timed out after {timeout}s")
        if check and proc.returncode != 0:
            pytest.fail(f"main.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    else:
        proc = run_mpi(ranks, argv, timeout=timeout, check=check)
    return proc, Path(results_dir) / name


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def reported_lines(run_dir: Path, rank: int) -> list[str]:
    """The accuracy lines a rank logged ("after task ..." and the final summary), without timings."""
    text = (run_dir / f"log_rank{rank}.txt").read_text()
    lines = re.findall(r"(after task \d+: .*|final average accuracy [\d.]+, forgetting [-\d.]+, "
                       r"backward transfer [-\d.]+)", text)
    assert lines, f"rank {rank} reported no accuracies"
    return lines


def start_main(args, results: Path, name: str, ranks: int = 1):
    """main.py in the background, in its own session (kill_after ends the whole job)."""
    argv = [sys.executable, "main.py", *args, "--results-dir", str(results), "--run-name", name]
    if ranks > 1:
        argv = mpirun_command(ranks, argv)
    return subprocess.Popen(argv, cwd=REPO, env=mpi_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def kill_after(proc, marker: Path, timeout=240):
    """SIGKILL the whole job as soon as `marker` exists (a checkpoint in the middle of a task)."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"run ended before {marker} appeared: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{marker} never appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
