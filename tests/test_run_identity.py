"""A run's identity: `--resume` never silently does nothing, a finished run is never overwritten,
two live runs never share a folder, and a damaged checkpoint falls back to the previous one."""
import json
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, mpi_env
from trainer_runs import metrics, run_main

QUICK = ["--epochs", "1", "--plots", "false", "--tensorboard", "false"]


def main_py(args, results, timeout=240):
    """main.py with exactly `args` (no run name added), as a user types it."""
    return subprocess.run([sys.executable, "main.py", *args, "--results-dir", str(results)], cwd=REPO,
                          env=mpi_env(), capture_output=True, text=True, timeout=timeout)


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("main.py: error: "), proc.stderr[-3000:]
    return lines[0]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != "run.lock"}


def test_resume_alone_never_continues_another_experiment(tmp_path):
    """The README's batch-job pattern: `--resume` with new flags must not be a silent no-op."""
    assert main_py(QUICK, tmp_path).returncode == 0
    first = next(tmp_path.iterdir())
    before = snapshot(first)
    proc = main_py(["--resume", "--agent", "er", "--epochs", "2", "--plots", "false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no run in" in proc.stderr and "matches this configuration: starting a new one" in proc.stderr
    runs = sorted(p for p in tmp_path.iterdir())
    assert len(runs) == 2 and snapshot(first) == before  # the finished run is untouched
    second = next(p for p in runs if p != first)
    m = metrics(second)
    assert m["agent"] == "er" and m["finished"] and len(m["accuracy_matrix"]) == 5
    # the same command again finds its own finished run and leaves it alone
    again = main_py(["--resume", "--agent", "er", "--epochs", "2", "--plots", "false"], tmp_path)
    assert again.returncode == 0 and "already finished; nothing to do" in again.stderr
    assert len(list(tmp_path.iterdir())) == 2


def test_a_reused_run_name_is_refused_and_overwrite_keeps_nothing_old(tmp_path):
    _, g = run_main(QUICK, tmp_path, "G")
    before = snapshot(g)
    line = one_error_line(main_py([*QUICK, "--epochs", "2", "--run-name", "G"], tmp_path))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(g) == before
    # resuming a finished run says so, exits 0 and touches nothing
    done = main_py([*QUICK, "--run-name", "G", "--resume"], tmp_path)
    assert done.returncode == 0 and "already finished" in done.stderr and snapshot(g) == before
    # resuming it with another setting names what differs
    line = one_error_line(main_py([*QUICK, "--run-name", "G", "--resume", "--lr", "0.05"], tmp_path))
    assert "lr: 0.05 here, 0.02 in the run" in line
    line = one_error_line(main_py(["--resume", str(g), "--seed", "3"], tmp_path))
    assert "seed: 3 here, 0 in the run" in line and snapshot(g) == before
    # --overwrite replaces the run: no checkpoint of the old one survives
    proc = main_py([*QUICK, "--epochs", "2", "--run-name", "G", "--overwrite"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (g / "checkpoints").iterdir())
    assert names and all(n.endswith("-e0002") for n in names), names
    assert json.loads((g / "run.json").read_text())["status"] == "finished"


def test_resume_of_a_named_run_without_checkpoint_restarts_only_the_same_experiment(tmp_path):
    g = tmp_path / "G"
    _, _ = run_main(QUICK, tmp_path, "G")
    # as a run killed before its first checkpoint leaves it: config and identity, no checkpoint
    for folder in (g / "checkpoints", g / "metrics.json"):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    identity = json.loads((g / "run.json").read_text())
    (g / "run.json").write_text(json.dumps({**identity, "status": "running"}))
    line = one_error_line(main_py([*QUICK, "--run-name", "G", "--resume", "--agent", "er"], tmp_path))
    assert "agent: 'er' here, 'base' in the run" in line
    proc = main_py([*QUICK, "--run-name", "G", "--resume"], tmp_path)
    assert proc.returncode == 0 and "no complete checkpoint yet: starting it from the beginning" in proc.stderr
    assert metrics(g)["finished"] and metrics(g)["agent"] == "base"


def test_two_live_runs_never_share_a_folder(tmp_path):
    long_run = ["--epochs", "40", "--plots", "false", "--run-name", "C"]
    first = subprocess.Popen([sys.executable, "main.py", *long_run, "--results-dir", str(tmp_path)],
                             cwd=REPO, env=mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "C" / "run.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip()):
        assert first.poll() is None and time.time() < deadline, "the first run never took its folder"
        time.sleep(0.05)
    others = [subprocess.Popen([sys.executable, "main.py", *long_run, *extra, "--results-dir", str(tmp_path)],
                               cwd=REPO, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for extra in ([], ["--resume"], ["--overwrite"])]
    refused = [subprocess.CompletedProcess(p.args, p.wait(timeout=240), *p.communicate()) for p in others]
    assert first.poll() is None, "the first run ended before the others were refused: make it longer"
    for proc in refused:
        assert "is in use by a live run (pid" in one_error_line(proc)
    assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    assert metrics(tmp_path / "C")["finished"]


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 64,
                      "empty": b""}[how])


def _interrupted(results, name, ranks=1):
    """A run as SIGKILL leaves it after its last checkpoint: complete checkpoints, status running."""
    _, run = run_main(["--epochs", "2", "--checkpoint-every", "1", "--plots", "false", "--tensorboard",
                       "false", "--backend", "torch"], results, name, ranks=ranks)
    identity = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**identity, "status": "running"}))
    (run / "metrics.json").unlink()
    return run


@pytest.mark.parametrize("file, how", [("rank0.pt", "truncated"), ("shared.pt", "garbage"),
                                       ("rank0.pt", "empty"), ("shared.pt", "empty")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, file, how):
    run = _interrupted(tmp_path, "D")
    newest, previous = run / "checkpoints/t004-e0002", run / "checkpoints/t004-e0001"
    _damage(newest / file, how)
    proc, _ = run_main(["--resume", str(run)], tmp_path, "unused")
    log = (run / "log_rank0.txt").read_text()
    assert f"{newest / file}" in log and "unusable" in log, log[-2000:]
    assert f"resumed from {previous}" in log
    m = metrics(run)
    assert m["finished"] and len(m["accuracy_matrix"]) == 5


def test_a_damaged_rank_file_on_two_ranks_falls_back_and_nothing_usable_is_one_line(tmp_path):
    run = _interrupted(tmp_path, "D2", ranks=2)
    newest, previous = run / "checkpoints/t004-e0002", run / "checkpoints/t004-e0001"
    _damage(newest / "rank1.pt", "truncated")
    run_main(["--resume", str(run), "--backend", "torch"], tmp_path, "unused", ranks=2)
    log = (run / "log_rank0.txt").read_text()
    assert f"{newest / 'rank1.pt'}" in log and f"resumed from {previous}" in log
    assert metrics(run)["finished"]
    # every checkpoint damaged: one line, exit 2
    run = _interrupted(tmp_path, "D3")
    for folder in (run / "checkpoints").iterdir():
        _damage(folder / "shared.pt", "garbage")
    proc = main_py(["--resume", str(run)], tmp_path)
    line = one_error_line(proc)
    assert "no usable checkpoint to resume from" in line and "t004-e0001/shared.pt does not load" in line


def test_checkpoints_are_ordered_by_task_and_epoch_as_numbers(tmp_path):
    from trainer import checkpoint

    for name in ("t002-e0010", "t010-e0001", "t002-e0009", "t1000-e0001"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "COMPLETE").write_text("1\n")
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == [
        "t002-e0009", "t002-e0010", "t010-e0001", "t1000-e0001"]


def test_a_missing_or_damaged_saved_config_on_resume_is_one_line(tmp_path):
    run = _interrupted(tmp_path, "S")
    (run / "config.yaml").write_text("model: [unclosed\n")
    assert "cannot read the saved configuration" in one_error_line(main_py(["--resume", str(run)], tmp_path))
    (run / "config.yaml").unlink()
    assert "holds no config.yaml" in one_error_line(main_py(["--resume", str(run)], tmp_path))
    assert torch.load(run / "checkpoints/t004-e0002/shared.pt", weights_only=False)["epoch"] == 2
