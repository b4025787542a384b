"""Multi-rank checks of TorchGlobalBuffer (the 'torch' kind); launched by tests/test_torch_transport.py.

    torchrun --standalone --nproc-per-node P python tests/mpi_jobs/torch_global_checks.py OUT
    mpirun -np P python tests/mpi_jobs/torch_global_checks.py OUT     # only records the draws

Under torchrun every check runs and each prints "ok <name>" on rank 0; any failure prints the
traceback and exits non-zero (torchrun then ends the other ranks). Both launchers also write
OUT/draws_<kind>_rank<r>.npz: one fixed sequence of draws, by PythonGlobalBuffer under mpirun
and by TorchGlobalBuffer under torchrun, which the test compares.
"""
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from buffer_patterns import add_unevenly, cell_index, check, draw_hits, inclusion_p_value, make_samples, outputs

UNDER_MPI = "OMPI_COMM_WORLD_RANK" in os.environ or "PMIX_RANK" in os.environ
if UNDER_MPI:
    from mpi4py import MPI

    from buffers import PythonGlobalBuffer as Buffer

    RANK, P = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
else:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    from buffers.torch_global import TorchGlobalBuffer as Buffer

    RANK, P = dist.get_rank(), dist.get_world_size()


def report(name):
    dist.barrier()
    if RANK == 0:
        print("ok", name, flush=True)


def allgather(obj):
    out = [None] * P
    dist.all_gather_object(out, obj)
    return out


def check_representatives():
    """Byte-exact representatives with their own labels and extras, from every rank."""
    K, N, E, shape = 3, 4, 5, (2, 3, 4)
    for policy in ("fixed", "adaptive"):
        for dtype in ("uint8", "float32", "float16"):
            layout = dict(num_classes=K, slots_per_class=N) if policy == "fixed" else dict(capacity=K * N)
            buf = Buffer(sample_shape=shape, dtype=dtype, num_extras=E, seed=7, **layout)
            inserted = add_unevenly(buf, RANK, K, shape, dtype, E)  # 40 samples in 12 slots
            r = 5 + 3 * RANK  # ranks may ask for different r
            ox, oy, oe = outputs(buf, r + 2)
            where = np.full((r + 2, 2), -1, np.int64)
            origins = set()
            for _ in range(12):
                n = buf.sample(r, ox, oy, oe, where)
                assert n == min(r, K * N * P), (policy, n)
                seen = set()
                for i in range(n):
                    who = check(ox[i], oy[i], oe[i], E)
                    assert who not in seen, f"{who} drawn twice in one draw"
                    assert where[i, 0] == who[0], (where[i], who)
                    seen.add(who)
                    origins.add(who[0])
                    if who[0] == RANK:
                        assert inserted[who[2]] == who[1]
                assert (oy[n:] == -1).all(), "rows past n were written"
                assert list(where[:n, 0]) == sorted(where[:n, 0]), "not grouped by owner"
            everyone = set().union(*allgather(origins))
            assert everyone == set(range(P)), f"global draws came only from {everyone}"
            assert origins - {RANK}, f"rank {RANK} never got another rank's sample"
            st = buf.stats()
            assert st["draws"] == 12 and st["filled"] == K * N
            assert st["filled_per_rank"] == [K * N] * P and st["global_filled"] == K * N * P
            assert st["bytes_read_remote"] > 0
            buf.close()
            buf.close()  # idempotent
    report("representatives")


FILL = {"full": [8, 8, 8, 8], "half": [8, 4, 4, 0]}  # per-class fill (K=4, N=8) of each rank's slice


def check_uniform_over_ranks():
    """A global draw is uniform over all filled slots of all ranks (chi-square)."""
    K, N, r, draws = 4, 8, 16, 100
    fills = [FILL[("full", "half")[p % 2]] for p in range(P)]
    buf = Buffer(K, N, (6,), seed=11)
    x, y, _, _ = make_samples(RANK, np.repeat(np.arange(K), fills[RANK]), 0, (6,), "uint8")
    buf.add(x, y)
    index = cell_index(fills)
    hits = draw_hits(buf, r, draws, index)
    total = torch.from_numpy(hits)
    dist.all_reduce(total)
    assert buf.stats()["filled_per_rank"] == [sum(f) for f in fills]
    if RANK == 0:
        p_value = inclusion_p_value(total.numpy(), r / len(index))
        assert p_value > 1e-3, f"global draws not uniform over filled slots: p={p_value:.2e}"
        print(f"   p={p_value:.3f}", flush=True)
    buf.close()
    report("uniform over ranks")


def check_state_and_mismatch():
    """state()/load_state() -> identical later draws; bad or differing arguments on one rank
    raise on every rank (nobody is left waiting)."""
    a = Buffer(3, 4, (8,), num_extras=2, seed=5)
    labels = np.random.default_rng(RANK).integers(0, 3, size=30)
    x, y, e, _ = make_samples(RANK, labels, 0, (8,), "uint8", 2)
    a.add(x, y, e)
    b = Buffer(3, 4, (8,), num_extras=2, seed=99)
    b.load_state(a.state())
    for _ in range(3):
        ax, ay, ae = outputs(a, 6)
        bx, by, be = outputs(b, 6)
        assert a.sample(6, ax, ay, ae) == b.sample(6, bx, by, be)
        assert np.array_equal(ax, bx) and np.array_equal(ay, by) and np.array_equal(ae, be)
    a.close()
    b.close()
    for bad, word in (({"dtype": "float32" if RANK == P - 1 else "uint8"}, "dtype"),
                      ({"slots_per_class": -3 if RANK == P - 1 else 3}, "slots_per_class")):
        args = {"num_classes": 2, "slots_per_class": 3, "sample_shape": (4,), **bad}
        try:
            Buffer(**args)
        except ValueError as exc:
            assert word in str(exc), exc
        else:
            raise AssertionError(f"differing {word} accepted")
    report("state and mismatch")


def record_draws(out: Path):
    """One fixed sequence of draws (both policies, extras, r differing by rank), saved."""
    kind = "python" if UNDER_MPI else "torch"
    saved = {}
    for policy in ("fixed", "adaptive"):
        layout = dict(num_classes=4, slots_per_class=5) if policy == "fixed" else dict(capacity=20)
        buf = Buffer(sample_shape=(3, 4), num_extras=3, seed=21, **layout)
        for step in range(6):
            labels = np.random.default_rng([RANK, step]).integers(0, 4, size=9)
            x, y, e, _ = make_samples(RANK, labels, 9 * step, (3, 4), "uint8", 3)
            buf.add(x, y, e)
            r = 7 + 2 * RANK
            ox, oy, oe = outputs(buf, r)
            where = np.zeros((r, 2), np.int64)
            n = buf.sample(r, ox, oy, oe, where)
            for name, arr in (("x", ox), ("y", oy), ("e", oe), ("where", where)):
                saved[f"{policy}_{step}_{name}"] = arr[:n].copy()
        buf.close()
    np.savez(out / f"draws_{kind}_rank{RANK}.npz", **saved)


def main():
    out = Path(sys.argv[1])
    try:
        if not UNDER_MPI:
            check_representatives()
            check_uniform_over_ranks()
            check_state_and_mismatch()
        record_draws(out)
    except BaseException:  # noqa: BLE001 - any failure must end every rank
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        if UNDER_MPI:
            MPI.COMM_WORLD.Abort(1)
        os._exit(1)
    if not UNDER_MPI:
        dist.barrier()
        dist.destroy_process_group()
    if RANK == 0:
        print("all ok", flush=True)


if __name__ == "__main__":
    main()
