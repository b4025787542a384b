"""Global rehearsal in a user's own loop (agents/own_loop.py, examples/own_loop.py), as a user
runs the example: 2-rank mpirun and torchrun jobs, and the Horovod variant."""
import sys

import pytest

from common.errors import UserError
from conftest import REPO, run_mpi, run_torchrun

EXAMPLE = str(REPO / "examples/own_loop.py")


def final_accuracy(proc) -> float:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("final average accuracy")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return float(lines[0].split()[3])


def test_er_in_your_own_loop_beats_naive_fine_tuning_under_mpirun_and_torchrun():
    results = {}
    for method in ("naive", "er", "derpp"):
        results["mpirun", method] = final_accuracy(run_mpi(2, [sys.executable, EXAMPLE, "--method", method],
                                                           timeout=180))
    for method in ("naive", "er"):
        results["torchrun", method] = final_accuracy(run_torchrun(2, [EXAMPLE, "--method", method], timeout=180))
    for launcher in ("mpirun", "torchrun"):
        assert results[launcher, "er"] >= results[launcher, "naive"] + 0.30, results
    assert results["mpirun", "derpp"] >= results["mpirun", "naive"] + 0.30, results


def test_the_horovod_variant():
    pytest.importorskip("horovod.torch")
    proc = run_mpi(2, [sys.executable, EXAMPLE, "--method", "er", "--horovod"], timeout=180)
    assert final_accuracy(proc) >= 0.40, proc.stdout


def test_unknown_options_are_named_with_the_valid_ones():
    from agents.own_loop import rehearsal_memory

    with pytest.raises(UserError, match="rehearsal_memory\\(\\) does not take option\\(s\\) buffr; valid options: "):
        rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=32, buffer_size=10, buffr="native")
    with pytest.raises(UserError, match="mix='sideways'; valid values: 'in_place', 'concat'"):
        rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=32, buffer_size=10, mix="sideways")
