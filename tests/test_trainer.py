"""The trainer end to end, as users run it: one process and a 2-rank mpirun job."""
import csv
import json

import pytest
import yaml

from trainer_runs import metrics, reported_lines, run_main


def test_default_experiment_one_process_writes_parsable_results(tmp_path):
    _, run = run_main([], tmp_path, "default")  # no flags: the default experiment, to the end
    m = metrics(run)
    assert m["finished"] and m["tasks_done"] == m["num_tasks"] == 5
    assert len(m["accuracy_matrix"]) == 5 and [len(r) for r in m["accuracy_matrix"]] == [1, 2, 3, 4, 5]
    for key in ("final_average_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer"):
        assert isinstance(m[key], float)
    # naive fine-tuning forgets: only the last task is remembered
    assert m["final_average_accuracy"] < 0.35
    assert m["forgetting"] > 0.5
    assert m["timing"]["samples_per_s_rank"] > 0 and m["timing"]["samples_per_s_total"] > 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["agent"] == "base" and cfg["dataset"] == "digits"
    with (run / "accuracy_matrix.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["after_task"] + [f"task_{j}" for j in range(5)] and len(rows) == 6
    assert abs(float(rows[5][5]) - m["accuracy_matrix"][4][4]) < 1e-6
    with (run / "steps_rank0.csv").open() as f:
        steps = list(csv.DictReader(f))
    assert len(steps) == m["timing"]["steps"] and float(steps[0]["train_s"]) > 0
    assert "final average accuracy" in (run / "log_rank0.txt").read_text()


def test_joint_baseline_learns_every_task(tmp_path):
    _, run = run_main(["--config", "joint", "--epochs", "3"], tmp_path, "joint")
    m = metrics(run)
    assert m["final_average_accuracy"] >= 0.90, m["accuracy_matrix"]


def test_two_ranks_torch_backend_report_identical_metrics(tmp_path):
    _, run = run_main(["--backend", "torch", "--epochs", "3"], tmp_path, "mpi2", ranks=2)
    m = metrics(run)
    assert m["world_size"] == 2 and m["engine"] == "torch" and m["launcher"] == "mpi" and m["finished"]
    assert reported_lines(run, 0) == reported_lines(run, 1)
    assert (run / "steps_rank1.csv").is_file()
    # each rank trained on its own half of every task
    per_rank = json.loads((run / "metrics.json").read_text())["timing"]
    assert per_rank["samples_per_s_total"] > per_rank["samples_per_s_rank"]


def test_same_seed_same_accuracy_matrix(tmp_path):
    args = ["--epochs", "2", "--seed", "3", "--plots", "false", "--tensorboard", "false"]
    _, a = run_main(args, tmp_path, "a")
    _, b = run_main(args, tmp_path, "b")
    assert metrics(a)["accuracy_matrix"] == metrics(b)["accuracy_matrix"]


@pytest.mark.parametrize("preset", ["class_4_3_3", "domain"])
def test_other_scenarios_run(tmp_path, preset):
    _, run = run_main(["--config", preset, "--epochs", "1", "--plots", "false"], tmp_path, preset)
    m = metrics(run)
    assert m["num_tasks"] == 3 and m["finished"]


def test_augmented_rehearsal_run(tmp_path):
    _, run = run_main(["--augment", "true", "--agent", "nil_cpp", "--epochs", "1", "--plots", "false"],
                      tmp_path, "augment")
    m = metrics(run)
    assert m["finished"] and m["task_stats"][-1]["global_filled"] > 0
