"""What users run around main.py: the plot and comparison scripts on real results folders,
the run's own PNG plots and TensorBoard events, the launchers (2-rank jobs of the default
experiment) and the Spack environment."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, mpi_env
from trainer_runs import metrics, run_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAUNCH = REPO / "scripts" / "launch"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} missing"
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), f"{path} is not a PNG"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real results folders: the default experiment (naive) and the joint baseline."""
    results = tmp_path_factory.mktemp("results")
    _, naive = run_main(["--epochs", "1"], results, "naive")
    _, joint = run_main(["--config", "joint", "--epochs", "1"], results, "joint")
    return naive, joint


def script(name: str, *args, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], cwd=cwd,
                          env=env or mpi_env(), capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- (a) plot and compare scripts
def test_plot_results_redraws_the_pngs(runs, tmp_path):
    copies = []
    for run in runs:
        copy = shutil.copytree(run, tmp_path / run.name)
        shutil.rmtree(copy / "plots")
        copies.append(copy)
    proc = script("plot_results.py", *copies, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.split()]
    for copy in copies:
        for name in ("accuracy_matrix.png", "average_accuracy.png", "time_breakdown.png"):
            assert copy / "plots" / name in printed
            assert_png(copy / "plots" / name)


def test_compare_results_plot_and_table(runs, tmp_path):
    out = tmp_path / "cmp"
    proc = script("compare_results.py", *runs, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_png(out / "comparison.png")
    table = (out / "comparison.md").read_text()
    for text in (proc.stdout, table):
        assert "| naive | base |" in text and "| joint | base (joint) |" in text  # preset named
        assert "final avg acc" in text


def test_compare_results_default_out_is_comparison(runs, tmp_path):
    proc = script("compare_results.py", *runs, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_png(tmp_path / "comparison" / "comparison.png")
    assert (tmp_path / "comparison" / "comparison.md").is_file()


@pytest.mark.parametrize("name, extra", [("plot_results.py", []), ("compare_results.py", ["naive"])])
def test_not_a_results_folder_is_a_one_line_error(runs, tmp_path, name, extra):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    args = [runs[0] if e == "naive" else e for e in extra] + [empty]
    proc = script(name, *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), proc.stderr
    assert "not a results folder" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "comparison").exists() and not (empty / "plots").exists()


def test_compare_needs_two_runs_and_missing_folder_errors(runs, tmp_path):
    one = script("compare_results.py", runs[0], cwd=tmp_path)
    missing = script("plot_results.py", tmp_path / "nope", cwd=tmp_path)
    for proc, text in ((one, "at least two"), (missing, "no such folder")):
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert text in proc.stderr


# ---------------------------------------------------------------- (b) the run's own plots and events
def test_run_folder_has_plots_and_tensorboard_events(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    naive = runs[0]
    for name in ("accuracy_matrix.png", "average_accuracy.png", "time_breakdown.png"):
        assert_png(naive / "plots" / name)
    tb = naive / "tensorboard"
    events = list(tb.glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "accuracy/task_0", "accuracy/task_4", "accuracy/average"} <= tags
    m = metrics(naive)
    assert len(acc.Scalars("train/loss")) == m["timing"]["steps"]
    assert len(acc.Scalars("accuracy/task_0")) == m["num_tasks"]  # evaluated after every task
    assert acc.Scalars("accuracy/task_4")[-1].value == pytest.approx(m["accuracy_matrix"][4][4])

    # The time breakdown is one add_scalars chart: one sub-run (folder) per part.
    for part in ("load", "wait", "train"):
        sub = tb / f"time_step_breakdown_s_{part}"
        part_acc = EventAccumulator(str(sub))
        part_acc.Reload()
        assert "time/step_breakdown_s" in part_acc.Tags()["scalars"], part
        assert len(part_acc.Scalars("time/step_breakdown_s")) == m["timing"]["steps"]


# ---------------------------------------------------------------- (c) launchers
# Each launcher's real 2-rank run (mpirun.sh, torchrun.sh, horovodrun.sh, NP=4) is the README's
# command run as typed: tests/test_readme_commands.py.


def test_launchers_are_executable_with_a_header():
    for name in ("mpirun.sh", "horovodrun.sh", "torchrun.sh", "slurm.sbatch"):
        path = LAUNCH / name
        assert os.access(path, os.X_OK), name
        head = path.read_text().splitlines()
        assert head[0] == "#!/usr/bin/env bash" and head[1].startswith("# "), name
        assert "Edit" in "\n".join(head[:30]), name


# ---------------------------------------------------------------- (d) Slurm and Spack
def test_slurm_sbatch_syntax_and_srun_line(tmp_path):
    sbatch = LAUNCH / "slurm.sbatch"
    check = subprocess.run(["bash", "-n", str(sbatch)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = sbatch.read_text()
    for line in ("#SBATCH --nodes=", "#SBATCH --ntasks-per-node=", "#SBATCH --gpus-per-task=",
                 "#SBATCH --time=", "#SBATCH --requeue"):
        assert line in text, line

    # Run it with stand-ins for scontrol and srun: srun records what it was asked to run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu017\\ngpu018\\ngpu019\\n'\n")
    (bin_dir / "srun").write_text('#!/bin/sh\necho "MASTER=$MASTER_ADDR:$MASTER_PORT"\n'
                                  'for a in "$@"; do echo "ARG=$a"; done\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(REPO),
               SLURM_JOB_NODELIST="gpu[017-019]", SLURM_JOB_ID="123456", SLURM_JOB_NAME="cl-trainer",
               SLURM_JOB_NUM_NODES="3", SLURM_NTASKS="12", SLURM_CPUS_PER_TASK="8")
    proc = subprocess.run(["bash", str(sbatch), "--epochs", "3"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "MASTER=gpu017:" + str(20000 + 123456 % 20000) in out
    args = [line[4:] for line in out if line.startswith("ARG=")]
    main = args.index("main.py")
    assert args[main + 1:] == ["--resume", "--run-name", "cl-trainer-123456", "--config", "main", "--epochs", "3"], args
    assert "--mpi=pmix" in args[:main]


SPACK_PACKAGES = {
    "python", "py-torch", "py-torchvision", "py-horovod", "py-mpi4py", "py-pybind11",
    "py-scikit-build-core", "py-numpy", "py-scikit-learn", "py-pyyaml", "py-tqdm", "py-tensorboard",
    "py-matplotlib", "py-scipy", "openmpi", "cmake", "ninja",
}


def test_spack_environment_lists_what_a_cluster_install_needs():
    env = yaml.safe_load((REPO / "spack.yaml").read_text())["spack"]
    specs = env["specs"]
    assert all(isinstance(s, str) for s in specs), specs  # an unquoted "pkg@1:" parses as a mapping
    by_name = {re.split(r"[@+~ ]", s, maxsplit=1)[0]: s for s in specs}
    assert SPACK_PACKAGES <= set(by_name), SPACK_PACKAGES - set(by_name)
    assert "frameworks=pytorch" in by_name["py-horovod"] and "controllers=mpi" in by_name["py-horovod"]
    assert "+gloo" in by_name["py-torch"]  # torch.distributed on CPU
    assert env["concretizer"]["unify"] is True
    assert env["packages"]["all"]["providers"]["mpi"][0] == "openmpi"
    header = (REPO / "spack.yaml").read_text()
    assert "spack env activate . && spack install" in header
    assert "pip install --no-build-isolation ./cpp_loader" in header and "pip install continuum six" in header
