"""--help names the valid choices; --log-level debug shows the trainer's debug lines, not the libraries'."""
import subprocess
import sys

from conftest import REPO, mpi_env
from trainer_runs import run_main


def test_help_lists_the_valid_choices():
    out = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, env=mpi_env(), capture_output=True,
                         text=True, timeout=120).stdout
    flat = " ".join(out.split())
    for expected in ("one of: mnistnet, resnet18, resnet50", "one of: agem, base, cls_er, der, derpp, er, nil, nil_cpp",
                     "one of: digits, mnist, fashion_mnist, cifar10", "one of: auto, horovod, torch",
                     "one of: auto, cpu, cuda", "one of: decode, open, off"):
        assert expected in flat, expected


def test_debug_log_level_is_about_the_trainer(tmp_path):
    proc, run = run_main(["--epochs", "1", "--log-level", "debug"], tmp_path, "dbg")  # plots on: matplotlib runs
    assert "findfont" not in proc.stderr and "matplotlib" not in proc.stderr
    log = (run / "log_rank0.txt").read_text()
    assert "DEBUG trainer: configuration:" in log and "all 1 rank(s) agree on their options and data" in log
    assert (run / "plots" / "accuracy_matrix.png").is_file()
