"""The Slurm launcher for real: scripts/launch/slurm.sbatch submitted with sbatch to a one-node
Slurm that scripts/slurm_local.sh starts here (installing slurm-wlm, munge and PMIx with apt
when missing), on 2 ranks started by `srun --mpi=pmix`. A job requeued after its first
checkpoint must resume from it and end with the accuracy matrix of an uninterrupted run; a
killed rank must end the job, named. Needs root (slurmd); skipped, loudly, only without root or
without both Slurm and apt-get."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, mpi_env
from trainer_runs import metrics, run_main

SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
SBATCH = REPO / "scripts" / "launch" / "slurm.sbatch"
# As in test_resilience.py: checkpoints every epoch, so the requeue lands inside a task.
RUN = ["--agent", "nil_cpp", "--epochs", "4", "--checkpoint-every", "1", "--seed", "5",
       "--plots", "false", "--tensorboard", "false"]
# The sbatch as written asks for 2 nodes x 4 ranks with a GPU each; a user of a one-node,
# CPU-only Slurm overrides that on the command line, without editing the script.
ONE_NODE = ["-N1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-task=0"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED"}


class SlurmNotTested(UserWarning):
    """Shown in pytest's warnings summary when the Slurm tests were skipped."""


def skip_loudly(config, reason: str):
    """Skip, but so that nobody mistakes it for a pass: a banner past pytest's output capture,
    and a warning in its warnings summary."""
    text = f"Slurm launcher NOT tested: {reason}"
    bar = "!" * 78
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        sys.stdout.write(f"\n{bar}\n!! {text}\n{bar}\n")
        sys.stdout.flush()
    warnings.warn(text, SlurmNotTested, stacklevel=2)
    pytest.skip(text)


def why_not_available():
    """The reason this machine cannot run a local Slurm, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "slurmd must run as root and this test is not root (CI runs as root)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    return None


def two_free_ports() -> int:
    """A port p with p and p+1 free (slurmctld, slurmd): never the ports of another Slurm here."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, pytestconfig):
    """A running one-node Slurm of our own (own state folder, ports, munge socket); stopped at
    the end whatever happens. Yields the environment for sbatch/scontrol."""
    reason = why_not_available()
    if reason:
        skip_loudly(pytestconfig, reason)
    state = tmp_path_factory.mktemp("slurm")
    env = dict(mpi_env(), SLURM_LOCAL_DIR=str(state), SLURM_LOCAL_PORT=str(two_free_ports()),
               SLURM_CONF=str(state / "slurm.conf"),
               PYTHON=sys.executable)  # the job's ranks run this test's Python (sbatch exports all)
    control = ["bash", str(SLURM_LOCAL)]
    try:
        # stdin closed: CI has none, and apt must never wait for an answer.
        start = subprocess.run([*control, "start"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=900)
        if start.returncode != 0:
            pytest.fail(f"slurm_local.sh start exited {start.returncode}:\n{start.stdout}\n{start.stderr}")
        yield env
    finally:
        stop = subprocess.run([*control, "stop"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=180)
        assert stop.returncode == 0, f"slurm_local.sh stop failed:\n{stop.stdout}\n{stop.stderr}"


def slurm_cmd(env, *args, timeout=60) -> str:
    proc = subprocess.run(list(args), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


def submit(env, name: str, out: Path, results: Path) -> str:
    """sbatch the launcher as a user would (from the repository root); returns the job id."""
    text = slurm_cmd(env, "sbatch", "--parsable", *ONE_NODE, f"--job-name={name}", f"--output={out}",
                     str(SBATCH), *RUN, "--results-dir", str(results))
    return text.strip().split(";")[0]


def job(env, job_id: str) -> dict:
    """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
    text = slurm_cmd(env, "scontrol", "-o", "show", "job", job_id)
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(what: str, ready, env, job_id: str, out: Path, timeout: float):
    """Poll `ready()` every 50 ms; fail with the job's output if the job ends first or it times out."""
    deadline, checked = time.time() + timeout, 0.0
    while not ready():
        now = time.time()
        if now > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f}s; job {job(env, job_id)}\n{tail(out)}")
        if now - checked > 1:
            checked = now
            state = job(env, job_id)["JobState"]
            if state in ENDED and not ready():
                pytest.fail(f"{what}: job {job_id} ended ({state}) first\n{tail(out)}")
        time.sleep(0.05)


def wait_state(env, job_id: str, states: set, out: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while (info := job(env, job_id))["JobState"] not in states:
        if time.time() > deadline:
            pytest.fail(f"job {job_id} still {info['JobState']} after {timeout:.0f}s, "
                        f"expected {sorted(states)}\n{tail(out)}")
        time.sleep(0.2)
    return info


def tail(path: Path, n=4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} not written)"


def complete_checkpoints(run_dir: Path) -> list:
    return sorted(p.parent.name for p in (run_dir / "checkpoints").glob("*/COMPLETE"))


def rank_pids(job_id: str) -> dict:
    """{SLURM_PROCID: pid} of this job's main.py processes, from /proc."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0")
                           if b"=" in item)
        except OSError:  # gone, or not ours to read
            continue
        if b"main.py" in cmdline and environ.get(b"SLURM_JOB_ID") == job_id.encode() \
                and b"SLURM_PROCID" in environ:
            found[int(environ[b"SLURM_PROCID"])] = int(proc.name)
    return found


def test_requeued_job_resumes_from_its_checkpoint_to_the_same_accuracy_matrix(slurm, tmp_path):
    out = tmp_path / "requeued.out"
    job_id = submit(slurm, "requeued", out, tmp_path)
    run_dir = tmp_path / f"requeued-{job_id}"
    first = run_dir / "checkpoints" / "t000-e0001" / "COMPLETE"
    wait_for("the first checkpoint", first.exists, slurm, job_id, out, timeout=300)
    slurm_cmd(slurm, "scontrol", "requeue", job_id)

    # The first run is stopped and the job waits to start again (Slurm holds a requeued job back
    # for the credential lifetime): what it left is what the second run must resume from.
    info = wait_state(slurm, job_id, {"PENDING"}, out, timeout=60)
    assert info["Restarts"] == "1", info
    deadline = time.time() + 30
    while rank_pids(job_id):  # PENDING comes at once; the ranks take a moment to die
        assert time.time() < deadline, f"the ranks outlived the requeue by 30s: {rank_pids(job_id)}"
        time.sleep(0.05)
    assert job(slurm, job_id)["JobState"] == "PENDING", "the job restarted before its ranks were seen gone"
    left = complete_checkpoints(run_dir)
    assert left, f"no complete checkpoint left by the first run in {run_dir}"
    assert not (run_dir / "metrics.json").exists() or not metrics(run_dir)["finished"], \
        "the run finished before the requeue: it came too late to test a resume"
    assert left[-1] != "t004-e0004", left

    info = wait_state(slurm, job_id, ENDED, out, timeout=300)
    text = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{tail(out)}"
    assert f"job {job_id} (restart 0)" in text and f"job {job_id} (restart 1)" in text, tail(out)
    assert "DUE TO JOB REQUEUE" in text, tail(out)
    resumed = f"resumed from {run_dir / 'checkpoints' / left[-1]}"
    assert resumed in (run_dir / "log_rank0.txt").read_text(), (resumed, tail(out))
    final = metrics(run_dir)
    assert final["finished"] and final["world_size"] == 2 and final["launcher"] == "slurm", final

    # The same experiment never interrupted, as a 2-rank mpirun job: same matrix, within a point
    # (two ranks are not bit-reproducible across a resume; see test_resilience.py).
    _, reference = run_main(RUN, tmp_path, "reference", ranks=2)
    want, got = metrics(reference)["accuracy_matrix"], final["accuracy_matrix"]
    assert [len(row) for row in got] == [len(row) for row in want] == [1, 2, 3, 4, 5], got
    a, b = np.array(want[-1]), np.array(got[-1])
    assert abs(a.mean() - b.mean()) <= 0.01, (a, b)


def test_a_killed_rank_ends_the_job_within_a_minute_naming_it(slurm, tmp_path):
    out = tmp_path / "killed.out"
    job_id = submit(slurm, "killed", out, tmp_path)
    first = tmp_path / f"killed-{job_id}" / "checkpoints" / "t000-e0001" / "COMPLETE"
    wait_for("the first checkpoint", first.exists, slurm, job_id, out, timeout=300)
    pids = rank_pids(job_id)
    assert sorted(pids) == [0, 1], f"ranks found in /proc: {pids}"
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.time()
    info = wait_state(slurm, job_id, ENDED, out, timeout=90)
    while rank_pids(job_id) and time.time() - killed_at < 90:  # ended means no rank left either
        time.sleep(0.2)
    elapsed = time.time() - killed_at
    assert not rank_pids(job_id), f"rank(s) {sorted(rank_pids(job_id))} outlived the job"
    assert elapsed < 60, f"the job took {elapsed:.0f}s to end after rank 1 was killed"
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", info
    text = out.read_text()
    assert re.search(r"srun: error: \S+: task 1: Killed", text), tail(out)
