"""Bad input from a user: one line naming the problem and the valid choices, non-zero exit,
no traceback, and nothing written."""
import subprocess
import sys

import pytest

from conftest import REPO, mpi_env

CASES = [
    (["--model", "vgg"], "unknown model 'vgg'; valid models: "),
    (["--dataset", "svhn"], "unknown dataset 'svhn'; valid datasets: "),
    (["--agent", "ewc"], "unknown agent 'ewc'; valid agents: "),
    (["--backend", "mxnet"], "unknown backend 'mxnet'; valid choices: auto, horovod, torch"),
    (["--agent-config", "{'reset_state_dict': True"], "--agent-config must be a dict"),
    (["--config", "no_such_preset"], "no preset 'no_such_preset' in config.yaml; valid presets: "),
    (["--yaml-config", "{bad}", "--config", "x"], "malformed YAML"),
    (["--dataset", "mnist", "--dataset-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--dataset", "cifar10"], "--dataset-dir"),
    (["--agent-config", "{'reset': True}"], "valid keys: reset_state_dict"),
    (["--epochz", "3"], "unknown option --epochz (did you mean --epochs?)"),
    (["--agent-config", "{1: 2}"], "keys must be option names (strings), got 1"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--lr", "nan"], "lr must be a finite number, got nan"),
    (["--momentum", "inf"], "momentum must be a finite number, got inf"),
    (["--epochs", "2.9"], "argument --epochs: invalid int value: '2.9'"),
    (["--workers", "100000"], "workers must be at most 4 x the"),
    (["--agent", "der", "--agent-config", "{'alpha': .nan}"], "alpha for agent der must be a finite number"),
    (["--agent", "er", "--agent-config", "{'rehearsal_ratio': 500}"],
     "rehearsal_ratio for agent er is a percentage in (0, 100], got 500"),
    (["--agent", "er", "--agent-config", "{'policy': 'fixed', 'slots_per_class': 0}"],
     "slots_per_class for agent er is a whole number (>= 1), got 0"),
    (["--model-config", "{'depth': 3}"], "model 'mnistnet' does not take option(s) depth"),
    (["--overwrite"], "--overwrite replaces the --run-name folder: give --run-name too"),
    (["--agent", "er", "--agent-config", "{'buffer_size': 1000000000000}"], "the rehearsal buffer needs "),
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a CUDA GPU and --device cpu was asked for; "
                                           "valid choices on the CPU: off, bf16"),
    (["--epochs", "30", "--lr-schedule", "step", "--lr-milestones", "21,26,31", "--lr-factors", "0.5,0.05,0.01"],
     "milestone 31 is beyond --epochs 30"),
    (["--epochs", "30", "--lr-schedule", "step", "--lr-milestones", "21,26,28", "--lr-factors", "0.5,0.05"],
     "--lr-milestones has 3 value(s) (21,26,28) and --lr-factors 2 (0.5,0.05); give one factor per milestone"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_one_line_error(argv, message, tmp_path):
    if argv[:1] == ["--yaml-config"]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("x: {epochs: 3\n")
        argv = ["--yaml-config", str(bad), *argv[2:]]
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "main.py", *argv, "--results-dir", str(results)],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("main.py: error: ") and message in lines[0], lines[0]
    assert not results.exists() or not any(results.iterdir()), "a failed start left a results folder"
