"""common/: the one mpirun line and environment (tests, benchmarks, sanitize_native.sh)."""
import os
import subprocess
import sys

from common.mpirun import mpirun_env, mpirun_prefix
from conftest import REPO, mpi_env


def test_prefix_oversubscribes_binds_nothing_and_allows_root_only_as_root():
    argv = mpirun_prefix(4)
    assert os.path.basename(argv[0]) == "mpirun"
    assert argv[1:6] == ["-np", "4", "--oversubscribe", "--bind-to", "none"]
    assert ("--allow-run-as-root" in argv) == (os.geteuid() == 0)
    assert "-np" not in mpirun_prefix(None)


def test_env_defaults_yield_to_the_users_settings():
    env = mpirun_env({"OMPI_MCA_osc": "rdma", "PYTHONPATH": "/x"}, pythonpath=["/a", "/b"])
    assert env["OMPI_MCA_osc"] == "rdma" and env["OMPI_MCA_pml"] == "^ucx"
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"] == os.pathsep.join(["/a", "/b", "/x"])
    assert "OMP_NUM_THREADS" not in mpirun_env({}, one_thread=False)


def test_module_runs_a_command_on_n_ranks():
    proc = subprocess.run([sys.executable, "-m", "common.mpirun", "2", sys.executable, "-c",
                           "import os; print('rank', os.environ['OMPI_COMM_WORLD_RANK'])"],
                          cwd="/", env=mpi_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("rank")) == ["rank 0", "rank 1"]
    usage = subprocess.run([sys.executable, "-m", "common.mpirun", "two"], cwd=REPO, env=mpi_env(),
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode != 0 and "usage: python -m common.mpirun NP COMMAND" in usage.stderr
