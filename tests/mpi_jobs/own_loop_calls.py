"""Ranks of an own loop (agents/own_loop.py) that make different collective calls; launched by
tests/test_own_loop.py under `mpirun -np 2`:

    own_loop_calls.py agree    # different buffer kinds; one next_batch too many; exit without close on all ranks
    own_loop_calls.py exit     # rank 0 leaves after 3 steps without close(), rank 1 draws a 4th time
    own_loop_calls.py stuck    # rank 1 sleeps outside the memory; rank 0 waits at next_batch #3 (timeout_s 3)
    own_loop_calls.py cost     # microseconds per step with and without the checks (not a test: a measurement)

    torchrun --nproc-per-node 2 own_loop_calls.py torchrun   # no init_process_group; then one next_batch too many

Each rank prints "rank R raised: MESSAGE" for the UserError it gets and goes on (agree, torchrun)
or exits with status 3.
"""
import atexit
import sys
import time

import numpy as np
import torch

from agents.own_loop import rehearsal_memory
from common.errors import UserError
from trainer.launch import detect

RANK = detect().rank
X = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(RANK))
Y = torch.arange(8) % 10


def build(**options):
    return rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=8, buffer_size=16,
                            num_representatives=8, **options)


def steps(memory, n: int) -> None:
    for _ in range(n):
        memory.next_batch(X, Y)
        memory.insert(X, Y)


def say(line: str) -> None:
    """One write per line: the ranks share stdout, and unbuffered print() writes the newline apart."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def raised(fn) -> None:
    try:
        fn()
    except UserError as exc:
        say(f"rank {RANK} raised: {exc}")
        if sys.argv[1] not in ("agree", "torchrun"):
            sys.exit(3)
    else:
        say(f"rank {RANK} did not raise")


def one_too_many(memory, first: int) -> None:
    """`first` steps on every rank, then one more next_batch on rank 1 alone, then close()."""
    steps(memory, first)
    if RANK == 1:
        memory.next_batch(X, Y)
    memory.close()


def agree() -> None:
    raised(lambda: build(buffer="native" if RANK == 0 else "python"))
    memory = build(buffer="python")
    raised(lambda: one_too_many(memory, 3))
    @atexit.register  # registered before the memory's own exit hook, so it runs after it
    def closed_at_exit():
        say(f"rank {RANK} exit: {'closed' if last._closed else 'left open'}")

    last = build()  # native, never closed: the exit hooks close it on every rank
    steps(last, 2)


def under_torchrun() -> None:
    """Under torchrun: refused before torch.distributed is initialised; then one next_batch too many."""
    import torch.distributed as dist

    raised(build)
    dist.init_process_group("gloo")
    memory = build(buffer="python")
    raised(lambda: one_too_many(memory, 2))
    dist.destroy_process_group()


def exit_without_close() -> None:
    memory = build(buffer="native")
    steps(memory, 3)
    if RANK == 1:
        raised(lambda: memory.next_batch(X, Y))
    say(f"rank {RANK} leaves")


def stuck() -> None:
    memory = build(buffer="python", timeout_s=3)
    steps(memory, 2)
    if RANK == 1:
        time.sleep(120)  # e.g. blocked in a collective of its own
    raised(lambda: memory.next_batch(X, Y))


def cost() -> None:
    """Per kind: microseconds per step (next_batch + insert + a 1,000-float gradient allreduce, the
    sync a data-parallel step has anyway) with the two checks and without."""
    from mpi4py import MPI

    grad, n = torch.zeros(1000), 400

    def steps(memory, count):
        for _ in range(count):
            memory.next_batch(X, Y)
            memory.insert(X, Y)
            grad.copy_(torch.from_numpy(MPI.COMM_WORLD.allreduce(grad.numpy())))

    for kind in ("native", "python"):
        memory = build(buffer=kind)
        steps(memory, 20)
        calls, timing = memory._calls, {True: [], False: []}
        for checked in (True, False, True, False):
            memory._calls = calls if checked else None
            MPI.COMM_WORLD.Barrier()
            start = time.perf_counter()
            steps(memory, n)
            timing[checked].append((time.perf_counter() - start) / n * 1e6)
        memory._calls = calls
        if kind == "native":
            check_alone(calls)
        memory.close()
        if RANK == 0:
            on, off = min(timing[True]), min(timing[False])
            print(f"cost {kind}: {on:.0f} us per step checked, {off:.0f} us unchecked: {on - off:+.0f} us "
                  f"for 2 checks (B=8, R=8, 2 ranks)", flush=True)


def check_alone(calls) -> None:
    """Microseconds per check, against one blocking allgather of the same 5 int64 over MPI."""
    from mpi4py import MPI

    record, out = np.zeros(5, dtype=np.int64), np.empty((2, 5), dtype=np.int64)
    for what, call in (("check", lambda: calls.check("stats")),
                       ("Allgather", lambda: MPI.COMM_WORLD.Allgather(record, out))):
        MPI.COMM_WORLD.Barrier()
        start = time.perf_counter()
        for _ in range(2000):
            call()
        if RANK == 0:
            print(f"cost: {(time.perf_counter() - start) / 2000 * 1e6:.0f} us per {what}", flush=True)


{"agree": agree, "torchrun": under_torchrun, "exit": exit_without_close, "stuck": stuck, "cost": cost}[sys.argv[1]]()
