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


def start_main(args, results: Path, name: str, ranks: int = 1, stderr=subprocess.PIPE):
    """main.py in the background, in its own session (kill_after ends the whole job); `stderr`:
    where its log goes (a pipe: read it before it fills, or pass an open file)."""
    argv = [sys.executable, "main.py", *args, "--results-dir", str(results), "--run-name", name]
    if ranks > 1:
        argv = mpirun_command(ranks, argv)
    return subprocess.Popen(argv, cwd=REPO, env=mpi_env(), stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=True)


def kill_after(proc, marker: Path, timeout=240):
    """SIGKILL the whole job as soon as `marker` exists (a checkpoint in the middle of a task)."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"run ended before {marker} appeared: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{marker} never appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def check_resumes_bit_identical(run, results: Path, marker: str = "t001-e0001") -> None:
    """Kill `main.py run` (which must checkpoint every epoch) right after checkpoint `marker`,
    resume it, and require the accuracy matrix of an uninterrupted run (run alongside, on the
    other core: both are mostly start-up)."""
    log = results / "reference.stderr"
    with open(log, "w") as stderr:
        reference = start_main(run, results, "reference", stderr=stderr)
    proc = start_main(run, results, "killed")
    kill_after(proc, results / f"killed/checkpoints/{marker}/COMPLETE")
    run_main(["--resume", str(results / "killed")], results, "ignored")
    assert reference.wait(timeout=240) == 0, log.read_text()[-3000:]
    final = metrics(results / "killed")
    assert final["finished"]
    assert metrics(results / "reference")["accuracy_matrix"] == final["accuracy_matrix"]


def run_many_in_parallel(specs: list[str], processes: int = 2, timeout: float = 900) -> None:
    """benchmarks/run_main_many.py over `specs` (JSON flag lists), split over `processes`
    concurrent processes (one per core: each run is one rank's work)."""
    script = str(REPO / "benchmarks/run_main_many.py")
    procs = [subprocess.Popen([sys.executable, script, *specs[i::processes]], cwd=REPO, env=mpi_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-4000:]
