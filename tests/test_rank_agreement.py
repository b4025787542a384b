"""Ranks launched with different options or data end the job at once, naming the ranks and the
field, with nothing written; torchrun always gets one job of N ranks, never N one-rank jobs."""
import shutil
import subprocess
import time

import numpy as np

from common.mpirun import mpirun_prefix
from conftest import PYTHON, REPO, mpi_env
from test_data import make_mnist
from trainer_runs import metrics


def mpmd(contexts, timeout=120):
    """mpirun with one app context per rank: [(working dir, main.py args), ...]."""
    cmd = mpirun_prefix(None)
    for i, (wdir, args) in enumerate(contexts):
        cmd += ([":"] if i else []) + ["-np", "1", "-wdir", str(wdir), PYTHON, str(REPO / "main.py"), *args]
    started = time.time()
    proc = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - started


def test_ranks_with_different_seeds_end_the_job_naming_the_field(tmp_path):
    flags = ["--epochs", "1", "--backend", "torch", "--results-dir", str(tmp_path / "r"),
             "--tasksets-config", "{'class_order': 'random'}"]
    proc, elapsed = mpmd([(REPO, [*flags, "--seed", "0"]), (REPO, [*flags, "--seed", "1"])])
    assert proc.returncode != 0 and elapsed < 60, (elapsed, proc.stderr[-2000:])
    assert "the ranks disagree on their options: seed differs (rank 0: 0; rank 1: 1)" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_ranks_with_different_agents_and_backends_do_not_hang(tmp_path):
    flags = ["--epochs", "1", "--results-dir", str(tmp_path / "r")]
    proc, elapsed = mpmd([(REPO, [*flags, "--agent", "er", "--backend", "torch"]),
                          (REPO, [*flags, "--backend", "horovod"])])
    assert proc.returncode != 0 and elapsed < 60, (elapsed, proc.stderr[-2000:])
    assert 'agent differs (rank 0: "er"; rank 1: "base")' in proc.stderr
    assert not (tmp_path / "r").exists()


def test_ranks_reading_different_data_under_one_path_end_the_job(tmp_path):
    """Node-local copies of a dataset that differ: same --dataset-dir, other contents."""
    rng = np.random.default_rng(0)
    for node, n_train in (("node0", 40), ("node1", 50)):
        make_mnist(tmp_path / node / "data", False, rng, n_train=n_train, n_test=20)
    flags = ["--dataset", "mnist", "--dataset-dir", "data", "--epochs", "1", "--backend", "torch",
             "--results-dir", str(tmp_path / "r")]
    proc, elapsed = mpmd([(tmp_path / "node0", flags), (tmp_path / "node1", flags)])
    assert proc.returncode != 0 and elapsed < 60, (elapsed, proc.stderr[-2000:])
    assert "the ranks disagree on their data: train samples differs (rank 0: 40; rank 1: 50)" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_torchrun_without_backend_runs_one_job_of_two_ranks(tmp_path):
    torchrun = shutil.which("torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "main.py", "--epochs", "1",
                           "--plots", "false", "--results-dir", str(tmp_path), "--run-name", "t"],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = metrics(tmp_path / "t")
    assert m["world_size"] == 2 and m["engine"] == "torch" and m["launcher"] == "torchrun"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
    refused = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "main.py", "--backend",
                              "horovod", "--results-dir", str(tmp_path / "h")], cwd=REPO, env=mpi_env(),
                             capture_output=True, text=True, timeout=240)
    assert refused.returncode != 0 and "--backend horovod cannot run under torchrun" in refused.stderr
    assert not (tmp_path / "h").exists()
