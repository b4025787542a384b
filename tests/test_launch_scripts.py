"""The launch scripts check their variables before launching anything: a rank count, node count
or job id that is missing or not a whole number is one line naming it, exit 2, and no launcher
started (bash would say "unbound variable" or "integer expression expected", and mpirun takes
NP=0 for "as many ranks as slots"). Run with bash and stand-in launchers; the scripts' real
launches are tests/test_launch_and_plots.py's and tests/test_slurm.py's."""
import os
import subprocess

import pytest

from conftest import REPO

LAUNCH = REPO / "scripts" / "launch"
STAND_INS = ("mpirun", "horovodrun", "torchrun", "srun", "scontrol")
IN_SLURM = {"SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "cl", "SLURM_JOB_NODELIST": "n1"}


def run_script(tmp_path, script: str, variables: dict) -> tuple[subprocess.CompletedProcess, list]:
    """`bash script` with only `variables` set (and a PATH of stand-ins that record their
    arguments); returns (the process, the arguments each stand-in was started with)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in STAND_INS:
        stub = bin_dir / name
        text = 'printf "gpu1\\n"\n' if name == "scontrol" else f'echo "{name} $*" >> "{calls}"\n'
        stub.write_text("#!/bin/sh\n" + text)
        stub.chmod(0o755)
    # VIRTUAL_ENV set: the scripts leave PATH alone (no ./.venv with the real launchers first)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path),
           "VIRTUAL_ENV": str(tmp_path), "PYTHON": "python", **variables}
    proc = subprocess.run(["bash", str(LAUNCH / script), "--epochs", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    return proc, calls.read_text().splitlines() if calls.exists() else []


BAD = [
    ("mpirun.sh", {"NP": "0"}, "mpirun.sh: error: NP=0: the number of ranks must be a whole number >= 1"),
    ("mpirun.sh", {"NP": "two"}, "mpirun.sh: error: NP=two: the number of ranks must be a whole number >= 1"),
    ("horovodrun.sh", {"NP": "-2"}, "horovodrun.sh: error: NP=-2: the number of ranks must be a whole number >= 1"),
    ("torchrun.sh", {"NP": "1.5"},
     "torchrun.sh: error: NP=1.5: the number of ranks per node must be a whole number >= 1"),
    ("torchrun.sh", {"NNODES": "two"},
     "torchrun.sh: error: NNODES=two: the number of nodes must be a whole number >= 1"),
    ("torchrun.sh", {"NNODES": "2"},
     "torchrun.sh: error: RDZV_ENDPOINT is not set: the rendezvous host:port of a run on 2 nodes; "
     "set it to the same host:port on every node (e.g. RDZV_ENDPOINT=node1:29400)"),
    ("slurm.sbatch", {},
     "slurm.sbatch: error: SLURM_JOB_ID is not set: the Slurm job id; submit this script with sbatch "
     "(outside Slurm use scripts/launch/mpirun.sh)"),
    ("slurm.sbatch", {**IN_SLURM, "SLURM_JOB_ID": "12x"},
     "slurm.sbatch: error: SLURM_JOB_ID=12x: the Slurm job id must be a whole number >= 0"),
    ("slurm.sbatch", {**IN_SLURM, "SLURM_JOB_NODELIST": ""},
     "slurm.sbatch: error: SLURM_JOB_NODELIST is not set: the job's nodes; submit this script with sbatch "
     "(outside Slurm use scripts/launch/mpirun.sh)"),
]


@pytest.mark.parametrize("script, variables, message", BAD, ids=[f"{s}-{v}" for s, v, _ in BAD])
def test_a_bad_variable_is_one_line_exit_2_and_nothing_launched(tmp_path, script, variables, message):
    proc, calls = run_script(tmp_path, script, variables)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [message], proc.stderr
    assert calls == []


def test_whole_numbers_reach_the_launcher_as_numbers(tmp_path):
    proc, calls = run_script(tmp_path, "mpirun.sh", {"NP": "08"})  # not octal, not "08"
    assert proc.returncode == 0, proc.stderr
    assert calls[0].startswith("mpirun -np 8 ") and calls[0].endswith(" python main.py --config main --epochs 1")
