"""Resuming as users do: a torchrun run's checkpoint continues under mpirun (same and other world
size) instead of being called damaged; a default spelled out on --resume is no difference; a
real difference names the key; --resume PATH checks --agent-config against the run's agent."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, mpi_env, run_torchrun
from trainer_runs import metrics, run_main

RUN = ["--agent", "nil_cpp", "--epochs", "1", "--plots", "false", "--tensorboard", "false"]


def killed_before_last_task(run: Path) -> Path:
    """The run as if killed while training its last task: its newest checkpoint gone, not finished."""
    newest = sorted((run / "checkpoints").iterdir())[-1]
    shutil.rmtree(newest)
    status = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**status, "status": "running"}))
    return run


def copied(run: Path, to: Path) -> Path:
    return killed_before_last_task(Path(shutil.copytree(run, to)))


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("torchrun")
    run_torchrun(2, [REPO / "main.py", *RUN, "--results-dir", results, "--run-name", "tr"])
    return results / "tr"


@pytest.mark.parametrize("ranks", [2, 1])
def test_a_torchrun_checkpoint_resumes_under_mpirun(tmp_path, torchrun_run, ranks):
    run = copied(torchrun_run, tmp_path / "run")
    run_main(["--resume", str(run), "--backend", "torch"], tmp_path, "unused", ranks=ranks)
    log = (run / "log_rank0.txt").read_text()
    assert "continuing at task 5, epoch 1" in log
    if ranks == 2:  # same world size, another buffer kind: converted, and said
        assert "written by a 'buffers.TorchGlobalBuffer/1' buffer and is loaded into this launch's " \
               "'cpp_loader.Buffer/1' buffer" in log
    else:
        assert "resumed 2-rank checkpoint on 1 ranks: buffer re-sharded" in log
    final = metrics(run)
    assert final["finished"] and len(final["accuracy_matrix"]) == 5 and final["launcher"] != "torchrun"


@pytest.fixture(scope="module")
def one_rank_run(tmp_path_factory):
    _, run = run_main(RUN, tmp_path_factory.mktemp("runs"), "nil")
    return run


def resume(run, *flags):
    return subprocess.run([PYTHON, "main.py", "--resume", str(run), *flags], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=240)


def test_resume_names_the_runs_agent_and_the_key_that_differs(tmp_path, one_rank_run):
    run = copied(one_rank_run, tmp_path / "run")
    bad_key = resume(run, "--agent-config", "{'bufer_size': 50}")
    assert bad_key.returncode == 2 and bad_key.stderr.strip().startswith(
        "main.py: error: unknown --agent-config key 'bufer_size' for agent nil_cpp (did you mean 'buffer_size'?)")
    changed = resume(run, "--agent-config", "{'buffer_size': 50}")
    assert changed.returncode == 2 and "differs in agent_config.buffer_size: 50 here, None in the run" in \
        changed.stderr.strip(), changed.stderr
    spelled_out = resume(run, "--agent-config", "{'rehearsal_ratio': 10, 'buffer': 'native'}", "--plots", "false")
    assert spelled_out.returncode == 0, spelled_out.stderr[-3000:]  # the run's own defaults, given by name
    assert metrics(run)["finished"] and len(metrics(run)["accuracy_matrix"]) == 5
