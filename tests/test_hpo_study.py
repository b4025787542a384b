"""scripts/hpo.py: what keeps a study one study. A worker that would change what the trials depend
on is refused; workers started alike (and restarted ones) draw different points; the retry of a
killed last trial runs; trial folders the journal does not know are never read; a diverged trial
is failed, not scored and not retried. In process (no trial runs) but for the divergence."""
import json
import subprocess

import pytest
import yaml

from common.mpirun import find_mpirun
from conftest import PYTHON, REPO
from hpo_scripts import HPO, hpo_env, load_hpo, write_space

pytestmark = pytest.mark.timeout(300)
LR = {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}
FIXED = ["--", "--agent", "nil_cpp", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture
def hpo():
    return load_hpo()


def flags(tmp_path, *more, fixed=FIXED):
    space = write_space(tmp_path / "space.yaml", LR)
    return ["--space", str(space), "--study-dir", str(tmp_path / "study"), "--n-trials", "3", *more, *fixed]


def refusal(hpo, argv, capsys) -> str:
    capsys.readouterr()
    code = hpo.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hpo.py: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("change, differs", [
    (["--launcher", f"{find_mpirun()} -np 2"], f"another launcher (no launcher (1 rank); this worker's: "
                                               f"'{find_mpirun()} -np 2' (2 ranks))"),
    (["--objective", "incremental"], "another objective ('final'; this worker's: 'incremental')"),
    (["--seed", "1"], "another seed (0; this worker's: 1"),
])
def test_a_worker_that_would_change_the_trials_is_refused(hpo, tmp_path, capsys, change, differs):
    hpo.prepare(flags(tmp_path, "--seed", "0"))  # creates the study, runs nothing
    err = refusal(hpo, flags(tmp_path, *change), capsys)
    assert "was started with " + differs in err, err


def test_other_fixed_options_or_code_are_refused(hpo, tmp_path, capsys):
    worker = hpo.prepare(flags(tmp_path))
    err = refusal(hpo, flags(tmp_path, fixed=[*FIXED, "--momentum", "0.5"]), capsys)
    assert "was started with another fixed options" in err
    stored = worker.study.user_attrs["identity"]
    assert stored["code"].startswith(("git ", "rehearsal-trainer ")) and stored["world_size"] == 1
    worker.study.set_user_attr("identity", {**stored, "code": "git 0000000"})  # as if the checkout moved on
    err = refusal(hpo, flags(tmp_path), capsys)
    assert "another code version (git 0000000; this worker's: " in err


def test_workers_started_alike_and_restarted_draw_different_points(hpo, tmp_path):
    """The same command three times (two workers, then the first restarted, as a requeued array
    task): three worker numbers, three sampler streams, three different first points."""
    firsts = []
    for expected in range(3):
        worker = hpo.prepare(flags(tmp_path, "--seed", "0"))
        assert worker.number == expected
        firsts.append(worker.next_trial().params["lr"])
    assert len(set(firsts)) == 3, firsts


def kill_worker_of(study_dir, number):
    """Make trial `number`'s heartbeat name a process that is gone (the pid's start time differs)."""
    path = study_dir / "heartbeats" / f"{number}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "start": "0"}))


def test_the_retry_of_a_killed_last_trial_runs(hpo, tmp_path, capsys):
    argv = flags(tmp_path, "--seed", "0")
    argv[argv.index("--n-trials") + 1] = "1"
    first = hpo.prepare(argv).next_trial()
    kill_worker_of(tmp_path / "study", 0)
    worker = hpo.prepare(argv)
    with worker.asking():
        hpo.requeue_stale(worker.study, worker.storage, worker.dir / "heartbeats", 300)
    assert hpo.write_results(worker)  # a queued retry in the table: shown with its parameters
    table = capsys.readouterr().out
    assert "waiting" in table and f"lr={first.params['lr']:.4g}" in table, table
    retry = worker.next_trial()
    assert retry is not None and retry.number == 1 and retry.params == first.params
    assert worker.study.trials[1].user_attrs["retry_of"] == 0
    assert worker.next_trial() is None  # and then the study has its one trial


def foreign_trial(study_dir, record=None):
    """trials/0 of another study (or of this one before its journal was replaced), with results."""
    folder = study_dir / "trials" / "0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"finished": True, "accuracy_matrix": [[0.99]]}))
    if record is not None:
        (folder / "hpo_trial.json").write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("record", [None, {"study": "study", "study_uid": "another", "number": 0,
                                           "params": {"lr": 0.05}}])
def test_trial_folders_the_journal_does_not_know_are_refused(hpo, tmp_path, capsys, record):
    study = tmp_path / "study"
    foreign_trial(study, record)
    err = refusal(hpo, flags(tmp_path), capsys)
    assert f"{study / 'trials'} holds trial folders that study 'study' of the journal" in err
    assert "does not know (0: another study's, or the journal was replaced)" in err
    assert sorted(p.name for p in study.iterdir()) == ["trials"]  # no journal was started
    worker = hpo.prepare(flags(tmp_path, "--repair"))  # moves them aside, then the study starts afresh
    assert "moved 1 trial folder(s) the journal does not know (0)" in capsys.readouterr().out
    assert not (study / "trials" / "0").exists()
    assert [json.loads(p.read_text()) for p in study.glob("unmatched-*/0/metrics.json")][0]["finished"]
    assert worker.next_trial().number == 0


def test_a_trial_outcome_is_classified_by_exit_status_and_metrics(hpo):
    objective = hpo.metrics.final_average_accuracy
    diverged = {"status": "diverged", "finished": False, "accuracy_matrix": [[0.9]],
                "diverged": {"task": 2, "epoch": 1, "step": 17, "loss": "nan"}}
    assert hpo.classify(3, diverged, objective) == hpo.Outcome("diverged", None, "diverged at task 2 epoch 1 step 17: "
                                                                                 "loss nan")
    assert hpo.classify(3, None, objective).state == "diverged"
    assert hpo.classify(0, {"finished": True, "accuracy_matrix": [[1.0], [0.5, 0.7]]}, objective) == \
        hpo.Outcome("complete", 0.6)
    assert hpo.classify(1, {"finished": False, "accuracy_matrix": [[0.9]]}, objective).state == "fail"
    assert hpo.classify(0, None, objective).state == "fail"


def test_a_diverged_trial_is_failed_not_scored_nor_run_again(tmp_path):
    """A real main.py run with an LR of 1e6: exit 3 after a few steps."""
    space = write_space(tmp_path / "space.yaml", {"lr": {"type": "categorical", "choices": [1e6]}},
                        fixed={"plots": False, "tensorboard": False})
    study = tmp_path / "study"
    proc = subprocess.run([PYTHON, str(HPO), "--space", str(space), "--study-dir", str(study), "--n-trials", "1",
                           "--poll", "0.2", "--", "--agent", "nil_cpp", "--epochs", "1", "--batch-size", "8"],
                          cwd=REPO, env=hpo_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1 and "no trial completed" in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((study / "trials.json").read_text())
    assert len(rows) == 1 and rows[0]["state"] == "diverged" and rows[0]["value"] is None, rows
    assert rows[0]["note"].startswith("diverged at task 1 epoch 1 step "), rows
    assert "trial 0: diverged at task 1 epoch 1 step " in proc.stdout and "not run again" in proc.stdout
    assert (study / "trials.csv").read_text().splitlines()[1].split(",")[1] == "diverged"
    assert not (study / "best.yaml").exists()
    assert yaml.safe_load((study / "trials" / "0" / "config.yaml").read_text())["lr"] == 1e6
