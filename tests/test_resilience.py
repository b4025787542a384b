"""Checkpoint, kill, resume; a checkpoint cut short; a rank that dies ends the whole job."""
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, mpi_env, mpirun_command
from trainer_runs import kill_after, metrics, run_main, start_main

RUN = ["--agent", "nil_cpp", "--epochs", "4", "--checkpoint-every", "1", "--seed", "5",
       "--plots", "false", "--tensorboard", "false"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_killed_run_resumes_to_the_same_accuracy_matrix(tmp_path, ranks):
    backend = ["--backend", "torch"]
    _, reference = run_main([*RUN, *backend], tmp_path, "reference", ranks=ranks)
    proc = start_main([*RUN, *backend], tmp_path, "killed", ranks)
    kill_after(proc, tmp_path / "killed/checkpoints/t001-e0002/COMPLETE")
    killed = tmp_path / "killed"
    assert not (killed / "metrics.json").exists() or not metrics(killed)["finished"]
    # a checkpoint the kill cut short: files half written, never marked complete
    partial = killed / "checkpoints/t009-e0001"
    partial.mkdir()
    (partial / "shared.pt").write_bytes(b"\x80\x02truncated")
    (partial / "rank0.pt.tmp").write_bytes(b"half")
    _, resumed = run_main(["--resume", str(killed), "--backend", "torch"], tmp_path, "ignored", ranks=ranks)
    assert resumed == tmp_path / "ignored"  # run_main's name is unused: resume continues `killed`
    final = metrics(killed)
    assert final["finished"] and "resumed from" in (killed / "log_rank0.txt").read_text()
    a, b = np.array(metrics(reference)["accuracy_matrix"][-1]), np.array(final["accuracy_matrix"][-1])
    if ranks == 1:
        assert metrics(reference)["accuracy_matrix"] == final["accuracy_matrix"]  # bit-identical
    else:
        assert abs(a.mean() - b.mean()) <= 0.01, (a, b)


def test_damaged_buffer_state_in_a_checkpoint_is_one_line(tmp_path):
    """(Another world size is no longer refused: see tests/test_elastic.py.) A checkpoint whose
    buffer slice does not add up (a slot holding a class the counters do not know) is refused
    in one line, exit 2, and no checkpoint is written after it."""
    import json

    import torch

    _, run = run_main(["--agent", "nil_cpp", "--epochs", "2", "--checkpoint-every", "1", "--plots", "false",
                       "--tensorboard", "false"], tmp_path, "one")
    checkpoints = sorted((run / "checkpoints").iterdir())
    for folder in checkpoints[1:]:  # as if killed after the next-to-last checkpoint
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(record, status="running")))
    path = checkpoints[0] / "rank0.pt"
    state = torch.load(path, weights_only=False)
    state["agent"]["buffer"]["labels"][0] = 99
    torch.save(state, path)
    proc = subprocess.run([sys.executable, "main.py", "--resume", str(run)], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "osc_ucx" not in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "buffer state is damaged" in errors[0] and "label 99" in errors[0], proc.stderr
    assert sorted((run / "checkpoints").iterdir()) == checkpoints[:1]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "main.py", "--resume", str(tmp_path / "empty")], cwd=REPO,
                          env=mpi_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no complete checkpoint" in proc.stderr and "Traceback" not in proc.stderr


BACKENDS = ["torch", "horovod"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_dying_rank_ends_the_job_with_its_name(tmp_path, backend, mode):
    flags = ["--backend", backend, "--results-dir", str(tmp_path), "--epochs", "3", "--plots", "false"]
    argv = mpirun_command(2, [sys.executable, str(REPO / "tests/mpi_jobs/die.py"), mode, "1", "--", *flags])
    started = time.time()
    proc = subprocess.run(argv, cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=120)
    elapsed = time.time() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert elapsed < 60, f"the job took {elapsed:.0f}s to end"
    if mode == "raise":
        assert "rank 1 of 2 failed: RuntimeError: injected failure" in out, out[-3000:]
    else:
        assert "rank 1" in out and ("signal 9" in out or "Killed" in out), out[-3000:]
