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
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("main.py: error: ") and message in lines[0], lines[0]
    assert not results.exists() or not any(results.iterdir()), "a failed start left a results folder"
