"""Multi-rank checks of the plain-Python buffers; launched by tests/test_python_buffers.py.

    mpirun -np P python tests/mpi_jobs/python_buffers.py

Each check prints "ok <name>" on rank 0; any failure prints the traceback and aborts the job
(so no rank is left waiting in a collective).
"""
import sys
import traceback

import numpy as np
from mpi4py import MPI

from buffer_patterns import add_unevenly, cell_index, check, draw_hits, inclusion_p_value, make_samples, outputs
from buffers import LocalBuffer, PythonGlobalBuffer

COMM = MPI.COMM_WORLD
RANK, P = COMM.Get_rank(), COMM.Get_size()
KINDS = {"python": PythonGlobalBuffer, "local": LocalBuffer}


def report(name):
    COMM.Barrier()
    if RANK == 0:
        print("ok", name, flush=True)


def check_representatives():
    """Byte-exact representatives with their own labels and extras; origin of each."""
    K, N, E, shape = 3, 4, 5, (2, 3, 4)
    for kind, cls in KINDS.items():
        for dtype in ("uint8", "float32", "float16"):
            buf = cls(K, N, shape, dtype=dtype, num_extras=E, seed=7)
            inserted = add_unevenly(buf, RANK, K, shape, dtype, E)  # 40 samples in 12 slots
            r = 5 + 3 * RANK  # ranks may ask for different r
            ox, oy, oe = outputs(buf, r + 2)
            origins = set()
            for _ in range(12):
                n = buf.sample(r, ox, oy, oe)
                want = min(r, K * N * P) if kind == "python" else min(r, K * N)
                assert n == want, (kind, n, want)
                seen = set()
                for i in range(n):
                    who = check(ox[i], oy[i], oe[i], E)
                    assert who not in seen, f"{kind}: {who} drawn twice in one draw"
                    seen.add(who)
                    origins.add(who[0])
                    if who[0] == RANK:
                        assert inserted[who[2]] == who[1]
                assert (oy[n:] == -1).all(), "rows past n were written"
            everyone = set().union(*COMM.allgather(origins))
            if kind == "python":
                assert everyone == set(range(P)), f"global draws came only from {everyone}"
                assert P == 1 or origins - {RANK}, f"rank {RANK} never got another rank's sample"
            else:
                assert origins == {RANK}, f"local draws on rank {RANK} came from {origins}"
            st = buf.stats()
            assert st["draws"] == 12 and st["filled"] == K * N
            if kind == "python":
                assert st["filled_per_rank"] == [K * N] * P and st["global_filled"] == K * N * P
                assert st["bytes_read_remote"] > 0 or P == 1
            else:
                assert st["bytes_read_remote"] == 0
            buf.close()
    report("representatives")


FILL = {  # per-class fill counts (K=4, N=8) of each rank's slice: full, half, empty, quarter
    "full": [8, 8, 8, 8], "half": [8, 4, 4, 0], "empty": [0, 0, 0, 0], "quarter": [4, 0, 4, 0]}


def check_uniform_over_ranks():
    """A global draw is uniform over all filled slots of all ranks (chi-square)."""
    K, N, r, draws = 4, 8, 16, 100
    pattern = ["full", "half", "empty", "quarter"] if P >= 4 else ["full", "half"][:P]
    fills = [FILL[pattern[p % len(pattern)]] for p in range(P)]
    buf = PythonGlobalBuffer(K, N, (6,), seed=11)
    labels = np.repeat(np.arange(K), fills[RANK])
    if len(labels):
        x, y, _, _ = make_samples(RANK, labels, 0, (6,), "uint8")
        buf.add(x, y)
    index = cell_index(fills)
    hits = draw_hits(buf, r, draws, index)
    total = COMM.reduce(hits, op=MPI.SUM)
    assert buf.stats()["filled_per_rank"] == [sum(f) for f in fills]
    if RANK == 0:
        p_value = inclusion_p_value(total, r / len(index))
        assert p_value > 1e-3, f"global draws not uniform over filled slots: p={p_value:.2e}"
        per_rank = [int(sum(total[index[k]] for k in index if k[0] == p)) for p in range(P)]
        expected = [total.sum() * sum(f) / len(index) for f in fills]
        print(f"   per-rank draws {per_rank}, expected {np.round(expected).tolist()}, "
              f"p={p_value:.3f}", flush=True)
    buf.close()
    report("uniform over ranks")


def draw_sequence(buf, r, draws):
    ox, oy, oe = outputs(buf, r)
    out = []
    for _ in range(draws):
        n = buf.sample(r, ox, oy, oe)
        out.append((ox[:n].copy(), oy[:n].copy(), None if oe is None else oe[:n].copy()))
    return out


def same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x1, x2) and np.array_equal(y1, y2) and
        (e1 is None or np.array_equal(e1, e2)) for (x1, y1, e1), (x2, y2, e2) in zip(a, b))


def fill(buf, count, first=0):
    labels = np.random.default_rng([RANK, first]).integers(0, buf.num_classes, size=count)
    x, y, e, _ = make_samples(RANK, labels, first, buf.sample_shape, buf.dtype, buf.num_extras)
    buf.add(x, y, e)


def check_determinism_and_state():
    """Same seed -> same draws; state()/load_state() -> identical subsequent draws."""
    for kind, cls in KINDS.items():
        a = cls(3, 4, (8,), num_extras=2, seed=5)
        b = cls(3, 4, (8,), num_extras=2, seed=5)
        fill(a, 30)
        fill(b, 30)
        assert same(draw_sequence(a, 6, 4), draw_sequence(b, 6, 4)), f"{kind}: same seed differs"
        saved = a.state()
        after = draw_sequence(a, 6, 3)
        fill(a, 20, first=100)
        after += draw_sequence(a, 6, 3)
        c = cls(3, 4, (8,), num_extras=2, seed=99)
        fill(c, 7, first=500)  # content that load_state must replace entirely
        c.load_state(saved)
        replay = draw_sequence(c, 6, 3)
        fill(c, 20, first=100)
        replay += draw_sequence(c, 6, 3)
        assert same(after, replay), f"{kind}: draws after load_state differ"
        for buf in (a, b, c):
            buf.close()
    report("determinism and state")


def check_async_and_close():
    with PythonGlobalBuffer(2, 3, (4,), seed=1) as buf:
        fill(buf, 10)
        ox, oy, _ = outputs(buf, 4)
        buf.start(4, ox, oy)
        assert buf.wait() == 4
        for i in range(4):
            check(ox[i], oy[i])
    assert buf.closed
    buf.close()  # idempotent
    report("async and close")


def check_mismatch():
    """Shapes that differ across ranks fail on every rank, naming the field."""
    if P < 2:
        return
    try:
        PythonGlobalBuffer(2, 3, (4,) if RANK == 0 else (5,))
    except ValueError as exc:
        assert "sample_shape" in str(exc), exc
    else:
        raise AssertionError("mismatched sample_shape accepted")
    try:
        LocalBuffer(2, 3, (4,), dtype="uint8" if RANK else "float32")
    except ValueError as exc:
        assert "dtype" in str(exc), exc
    else:
        raise AssertionError("mismatched dtype accepted")
    try:
        LocalBuffer(2, -3 if RANK == P - 1 else 3, (4,))
    except ValueError as exc:
        assert "slots_per_class" in str(exc), exc
    else:
        raise AssertionError("bad slots_per_class on one rank accepted")
    report("mismatch")


def main():
    try:
        check_representatives()
        check_uniform_over_ranks()
        check_determinism_and_state()
        check_async_and_close()
        check_mismatch()
    except BaseException:  # noqa: BLE001 - any failure must end every rank
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        COMM.Abort(1)
    if RANK == 0:
        print("all ok", flush=True)


if __name__ == "__main__":
    main()
