"""scripts/hpo.py: real searches of main.py runs (digits, 1 epoch per task), early stopping,
resuming a killed study, two workers on one journal, the best preset, and bad input. hpo.py runs
as a user runs it: no PYTHONPATH (hpo_scripts.hpo_env)."""
import fcntl
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from conftest import PYTHON, REPO, mpi_env
from hpo_scripts import HPO, hpo_env, load_hpo, write_space

pytestmark = pytest.mark.timeout(300)


def hpo_cmd(space, study, *args, extra=("--agent", "nil_cpp", "--epochs", "1", "--batch-size", "8")):
    return [PYTHON, str(HPO), "--space", str(space), "--study-dir", str(study), "--poll", "0.2", *args, "--",
            *extra]


def run_hpo(cmd, timeout=240):
    proc = subprocess.run(cmd, cwd=REPO, env=hpo_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def trials(study):
    return json.loads((study / "trials.json").read_text())


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory):
    """3 trials over lr in {0.05, 10} (sampler seed 0 draws 10, 0.05, 10): an LR of 10 diverges.
    1 epoch of B = 8 per task with momentum 0.9: enough (45 steps) to learn a task."""
    tmp = tmp_path_factory.mktemp("hpo")
    space = write_space(tmp / "space.yaml", {"lr": {"type": "categorical", "choices": [0.05, 10.0]}},
                        fixed={"momentum": 0.9, "plots": False, "tensorboard": False})
    study = tmp / "study"
    proc = run_hpo(hpo_cmd(space, study, "--n-trials", "3", "--seed", "0", "--min-resource", "1"))
    return study, proc


def test_search_end_to_end(lr_study):
    study, proc = lr_study
    rows = trials(study)
    assert [r["number"] for r in rows] == [0, 1, 2]
    for r in rows:  # every trial is a real run in its own folder, kept
        metrics = json.loads((study / r["folder"] / "metrics.json").read_text())
        assert len(metrics["accuracy_matrix"]) >= r["tasks"] >= 1  # pruned: may end a task later
        assert yaml.safe_load((study / r["folder"] / "config.yaml").read_text())["lr"] == r["lr"]
        record = json.loads((study / r["folder"] / "hpo_trial.json").read_text())  # whose folder it is
        assert (record["study"], record["number"], record["params"]) == ("study", r["number"], {"lr": r["lr"]})
    assert (study / "trials.csv").read_text().splitlines()[0].startswith("number,state,value")
    assert (study / "search.png").stat().st_size > 1000
    assert "best: trial" in proc.stdout
    best = yaml.safe_load((study / "best.yaml").read_text())["best"]
    assert (best["lr"], best["agent"], best["epochs"], best["batch_size"]) == (0.05, "nil_cpp", 1, 8)


def test_early_stopping_stops_a_diverging_trial(lr_study):
    """An LR-10 trial that starts after a good trial has reported task 1 is stopped after task 1."""
    study, _ = lr_study
    rows = trials(study)
    good = [r["number"] for r in rows if r["lr"] == 0.05 and r["state"] == "complete"]
    late_bad = [r for r in rows if r["lr"] == 10.0 and good and r["number"] > good[0]]
    assert late_bad, rows
    for r in late_bad:
        assert r["state"] == "pruned" and r["tasks"] == 1, r
        metrics = json.loads((study / r["folder"] / "metrics.json").read_text())
        assert not metrics["finished"] and metrics["tasks_done"] < metrics["num_tasks"]  # killed early


def test_best_preset_runs_with_main(lr_study, tmp_path):
    study, _ = lr_study
    proc = subprocess.run([PYTHON, "main.py", "--yaml-config", str(study / "best.yaml"), "--config", "best",
                           "--results-dir", str(tmp_path), "--run-name", "best"],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())
    assert (cfg["lr"], cfg["agent"], cfg["epochs"], cfg["preset"]) == (0.05, "nil_cpp", 1, "best")
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["finished"]


def _unlocked(lock_file) -> bool:
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_study_resumes_after_its_worker_is_killed(tmp_path):
    space = write_space(tmp_path / "space.yaml", {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    study = tmp_path / "study"
    cmd = hpo_cmd(space, study, "--n-trials", "2", "--seed", "1", "--pruner", "none",
                  extra=("--agent", "nil_cpp", "--epochs", "2", "--plots", "false", "--tensorboard", "false"))
    worker = subprocess.Popen(cmd, cwd=REPO, env=hpo_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = study / "trials" / "0" / "metrics.json"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline and worker.poll() is None:
        time.sleep(0.2)
    assert metrics.exists() and worker.poll() is None, "trial 0 never reported a task"
    worker.send_signal(signal.SIGKILL)  # mid-trial: after task 1 of 5
    worker.wait()
    deadline = time.time() + 30  # the orphaned main.py is ended too (it dies with its worker)
    while not _unlocked(study / "trials" / "0" / "run.lock") and time.time() < deadline:
        time.sleep(0.2)
    assert _unlocked(study / "trials" / "0" / "run.lock"), "trial 0's main.py outlived its killed worker"
    proc = run_hpo(cmd)
    assert "trial 0 was left running by a stopped worker: queued again" in proc.stdout
    rows = trials(study)
    assert len(rows) == 2 and all(r["state"] == "complete" for r in rows), rows
    retry = [r for r in rows if r["retry_of"] == 0]
    assert len(retry) == 1 and retry[0]["number"] == 1  # the killed trial's parameters, run again
    assert [r["number"] for r in rows] == [1, 2]
    killed = yaml.safe_load((study / "presets" / "0.yaml").read_text())["trial"]["lr"]
    assert retry[0]["lr"] == killed


def test_two_workers_share_one_study(tmp_path):
    """Two workers started alike (one --seed, as the Slurm array starts them) run 4 distinct trials."""
    space = write_space(tmp_path / "space.yaml", {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    study = tmp_path / "study"
    procs = [subprocess.Popen(hpo_cmd(space, study, "--n-trials", "4", "--seed", "0", "--pruner", "none",
                                      extra=("--agent", "nil_cpp", "--epochs", "1", "--plots", "false",
                                             "--tensorboard", "false")),
                              cwd=REPO, env=hpo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [line.split(":")[0] for out, _ in outs for line in out.splitlines() if "->" in line]
    assert sorted(started) == [f"trial {n}" for n in range(4)]  # each trial run by exactly one worker
    assert all(any("->" in line for line in out.splitlines()) for out, _ in outs)  # both worked
    rows = trials(study)
    assert sorted(r["number"] for r in rows) == [0, 1, 2, 3]
    assert all(r["state"] == "complete" for r in rows)
    assert len({r["lr"] for r in rows}) == 4, rows  # each worker its own sampler stream: no point twice
    assert sorted(p.name for p in (study / "trials").iterdir()) == ["0", "1", "2", "3"]


BAD = {
    "malformed": ("space:\n  lr: {type: loguniform, low: 0.01\n", "malformed YAML"),
    "no space": ("fixed: {agent: nil_cpp}\n", "no parameters under 'space:'"),
    "unknown option": ("space:\n  lrr: {type: loguniform, low: 0.01, high: 0.1}\n", "unknown main.py option 'lrr'"),
    "unknown agent key": ("fixed: {agent: nil_cpp}\nspace:\n"
                          "  agent_config.rehersal_ratio: {type: int, low: 5, high: 20}\n",
                          "unknown --agent-config key 'rehersal_ratio'"),
    "key of base's agent": ("space:\n  agent_config.alpha: {type: float, low: 0.1, high: 1.0}\n",
                            "unknown --agent-config key 'alpha' for agent base"),
    "empty range": ("space:\n  lr: {type: loguniform, low: 0.1, high: 0.1}\n", "empty range"),
    "bad type": ("space:\n  lr: {type: gaussian, low: 0.01, high: 0.1}\n", "unknown type 'gaussian'"),
    "bad value": ("space:\n  batch_size: {type: categorical, choices: [32, big]}\n", "batch_size in the search space"),
    "bad bound": ("space:\n  batch_size: {type: int, low: 16, high: 64.5}\n", "high must be an integer"),
    "negative lr": ("space:\n  lr: {type: uniform, low: -0.1, high: 0.1}\n", "lr must be positive"),
    "reserved": ("space:\n  run_name: {type: categorical, choices: [a, b]}\n", "set by hpo.py"),
    "bad agent": ("space:\n  agent: {type: categorical, choices: [nil_cpp, nope]}\n", "unknown agent 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_is_one_line_and_starts_nothing(case, tmp_path, capsys):
    text, message = BAD[case]
    (tmp_path / "space.yaml").write_text(text)
    study = tmp_path / "study"
    code = load_hpo().main(["--space", str(tmp_path / "space.yaml"), "--study-dir", str(study), "--n-trials", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hpo.py: error: ") and err.count("\n") == 1 and message in err, err
    assert not study.exists()  # no study, no trial


BAD_FLAGS = {  # flags (given the test's folder) -> the message's gist
    "study dir is a file": (lambda tmp: ["--study-dir", str(tmp / "a_file")], "is a file; give a folder"),
    "storage nowhere": (lambda tmp: ["--storage", "/proc/no/journal.log"], "cannot write the study's journal /proc/no"),
    "storage under a file": (lambda tmp: ["--storage", str(tmp / "a_file" / "j.log")], "Not a directory"),
    "storage is a folder": (lambda tmp: ["--storage", str(tmp)], "is a folder; give the journal's file name"),
    "unterminated quote": (lambda tmp: ["--launcher", "mpirun -np '2"], "no closing quotation"),
    "missing program": (lambda tmp: ["--launcher", "mpirunn -np 2"], "no program 'mpirunn' on PATH"),
    "no trials": (lambda tmp: ["--n-trials", "0"], "--n-trials must be at least 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flags_are_one_line_and_write_nothing(case, tmp_path, capsys):
    flags, message = BAD_FLAGS[case]
    (tmp_path / "a_file").write_text("")
    space = write_space(tmp_path / "space.yaml", {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    before = sorted(tmp_path.iterdir())
    code = load_hpo().main(["--space", str(space), "--study-dir", str(tmp_path / "study"), *flags(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hpo.py: error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.iterdir()) == before  # no study folder, no journal


def test_bad_input_exits_2_from_the_command_line(tmp_path):
    (tmp_path / "space.yaml").write_text("space:\n  lr: {type: loguniform, low: 0.2, high: 0.01}\n")
    proc = subprocess.run([PYTHON, str(HPO), "--space", str(tmp_path / "space.yaml"), "--study-dir",
                           str(tmp_path / "s"), "--", "--epochz", "1"], cwd=REPO, env=hpo_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown option --epochz (did you mean --epochs?)" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_a_study_continues_only_with_its_own_space(lr_study, tmp_path, capsys):
    study, _ = lr_study
    (tmp_path / "space.yaml").write_text("space:\n  lr: {type: categorical, choices: [0.05, 0.1]}\n")
    code = load_hpo().main(["--space", str(tmp_path / "space.yaml"), "--study-dir", str(study), "--n-trials", "3",
                            "--", "--agent", "nil_cpp", "--epochs", "1"])
    assert code == 2 and "was started with another space" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["0", "3"])
def test_hpo_array_sbatch_starts_one_worker_per_array_task(tmp_path, task):
    """The Slurm array script, run with a stand-in Python: hpo.py with the study's seed (the same
    for every array task: hpo.py gives each worker its own sampler stream) and srun launching each
    trial on the task's ranks."""
    sbatch = REPO / "scripts" / "launch" / "hpo_array.sbatch"
    assert subprocess.run(["bash", "-n", str(sbatch)]).returncode == 0
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do echo "ARG=$a"; done\n')
    stub.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub), SLURM_SUBMIT_DIR=str(REPO), SLURM_ARRAY_TASK_ID=task,
               SLURM_NTASKS="2", STUDY_DIR="/shared/study", N_TRIALS="12")
    proc = subprocess.run(["bash", str(sbatch), "--", "--epochs", "5"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ARG=")]
    assert args == ["scripts/hpo.py", "--space", "scripts/hpo_spaces/nil_cpp.yaml", "--study-dir", "/shared/study",
                    "--n-trials", "12", "--seed", "0", "--launcher", "srun --mpi=pmix --ntasks=2", "--", "--epochs",
                    "5"]


def test_shipped_spaces_are_valid(capsys):
    """The spaces that chose the defaults still name real options (checked, nothing run)."""
    hpo = load_hpo()
    for path in sorted((REPO / "scripts" / "hpo_spaces").glob("*.yaml")):
        space, fixed = hpo.load_space(str(path))
        hpo.check_space(space, hpo.fixed_layer(fixed, [], str(path)))
