"""Global rehearsal in a user's own loop (agents/own_loop.py, examples/own_loop.py), as a user
runs the example: 2-rank mpirun and torchrun jobs, and the Horovod variant; ranks that make
different collective calls (tests/mpi_jobs/own_loop_calls.py) end within 60 s, naming the calls;
launches whose ranks cannot connect, calls after close() and absurd sizes are refused in one line."""
import sys
import time

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


CALLS_JOB = str(REPO / "tests/mpi_jobs/own_loop_calls.py")
ONE_TOO_MANY = ("the ranks' calls differ at call #8: rank 0 called close #1 while rank 1 called next_batch #4 "
                "(all agreed up to call #7, insert #3)")


def raised_lines(proc) -> dict:
    """{rank: the message it raised}, from the job's "rank R raised: MESSAGE" lines."""
    out = {}
    for line in proc.stdout.splitlines():
        if " raised: " in line:
            rank, message = line.split(" raised: ", 1)
            out.setdefault(int(rank.split()[1]), []).append(message)
    return out


def test_ranks_that_build_different_memories_or_make_different_calls_raise_together_naming_them():
    proc = run_mpi(2, [sys.executable, CALLS_JOB, "agree"], timeout=60)
    said = raised_lines(proc)
    assert said[0] == said[1], proc.stdout
    construction, calls = said[0]
    assert "rehearsal_memory() arguments differ: kind (rank 0: 'native'; rank 1: 'python')" in construction
    assert ONE_TOO_MANY in calls
    assert "rank 0 exit: closed" in proc.stdout and "rank 1 exit: closed" in proc.stdout  # left open on all ranks


def test_a_rank_that_leaves_without_close_is_reported_by_every_rank_and_the_job_fails():
    proc = run_mpi(2, [sys.executable, CALLS_JOB, "exit"], timeout=60, check=False)
    message = "rank 0 exited without close() while rank 1 called next_batch #4 (all agreed up to call #7, insert #3)"
    assert proc.returncode != 0
    assert message in raised_lines(proc)[1][0], proc.stdout
    assert f"rank 0: rehearsal memory: the ranks' calls differ at call #8: {message}" in proc.stderr, proc.stderr


def test_a_rank_that_stops_calling_the_memory_makes_the_others_raise_after_timeout_s():
    start = time.monotonic()
    proc = run_mpi(2, [sys.executable, CALLS_JOB, "stuck"], timeout=60, check=False)  # rank 1 sleeps 120 s
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert ("rank 0 waited 3 s at next_batch #3 (call #6) for the other ranks, which did not make call #6 "
            "(all agreed up to call #5, insert #2)") in raised_lines(proc)[0][0], proc.stdout
    assert "timeout_s=3" in proc.stdout


def test_torchrun_without_init_process_group_is_refused_and_mismatches_raise_over_gloo():
    proc = run_torchrun(2, [CALLS_JOB, "torchrun"], timeout=90)
    said = raised_lines(proc)
    assert said[0] == said[1], proc.stdout
    assert said[0][0] == ("rehearsal memory: torchrun started 2 processes but torch.distributed is not initialised, "
                          "so each would build a one-rank buffer; call torch.distributed.init_process_group(\"gloo\") "
                          "on every rank before rehearsal_memory() (or launch with mpirun)")
    assert "rank 0 called close #1 while rank 1 called next_batch #3 (all agreed up to call #5, insert #2)" \
        in said[0][1]


def small_memory(**kwargs):
    from agents.own_loop import rehearsal_memory

    args = dict(sample_shape=(1, 8, 8), num_classes=10, batch_size=8, buffer_size=20, num_representatives=8)
    return rehearsal_memory(**{**args, **kwargs})


def test_a_launcher_of_several_processes_with_a_one_process_communicator_is_refused(monkeypatch):
    from mpi4py import MPI

    assert MPI.COMM_WORLD.Get_size() == 1  # this process: an MPI singleton, as under a mismatched srun
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(UserError, match="^rehearsal memory: slurm started 2 processes but MPI's COMM_WORLD has 1, "
                                        "so the ranks would build separate buffers; mpi4py's MPI is not the "):
        small_memory()


def test_calls_after_close_raise_one_line_and_close_again_does_nothing():
    import torch

    memory = small_memory()
    x, y = torch.zeros((8, 1, 8, 8), dtype=torch.uint8), torch.arange(8)
    memory.next_batch(x, y)
    memory.insert(x, y)
    memory.close()
    memory.close()
    for call in (lambda: memory.next_batch(x, y), lambda: memory.insert(x, y), memory.stats, memory.begin_task):
        with pytest.raises(UserError, match=r"^rehearsal memory: \w+\(\) after close\(\); build a new memory"):
            call()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_representatives=10**9), r"num_representatives must be an integer in \[1, 20\] \(at most the global "
                                      r"buffer's slots, 20 per rank x 1 rank\(s\).*got 1000000000$"),
    (dict(buffer_size=10**12), r"buffer_size=1000000000000 slots of 72 bytes \(sample_shape \(1, 8, 8\)\) x 1 rank"
                               r"\(s\) on this node need .* GiB is available; valid: buffer_size in \[1, \d+\] here$"),
    (dict(sample_shape=(3, 4096, 4096), buffer_size=10**6), r"buffer_size=1000000 slots of 50331656 bytes .* "
                                                            r"valid: buffer_size in \[1, \d+\] here$"),
    (dict(batch_size=10**11), r"batch_size=100000000000 \+ num_representatives=8 \(x 2 batch slots\) .* valid: "
                              r"batch_size in \[1, \d+\] here$"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0$"),
    (dict(sample_shape=(1, 0)), r"sample_shape must be a sequence of integers >= 1, got \(1, 0\)$"),
])
def test_absurd_sizes_are_refused_before_anything_is_allocated(kwargs, message):
    with pytest.raises(UserError, match="^rehearsal memory: " + message):
        small_memory(**kwargs)
