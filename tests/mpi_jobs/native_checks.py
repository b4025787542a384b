"""Multi-rank checks of the native buffer (cpp_loader); launched by tests/test_native_buffer.py.

    mpirun -np P python tests/mpi_jobs/native_checks.py CHECK [CHECK ...]

Rank 0 prints "ok CHECK" after each; a failure prints its traceback and aborts the job.
"""
import pickle
import re
import sys
import time

import numpy as np
from mpi4py import MPI

from buffer_patterns import check, identify, inclusion_p_value, make_samples, outputs
from cpp_loader import Buffer
from native_common import run_checks

COMM = MPI.COMM_WORLD
RANK, P = COMM.rank, COMM.size
DTYPES = ("uint8", "float32", "float16")


def held_everywhere(buf):
    """(rank, label, id) of every sample held by any rank, from the slices' states."""
    state, n = buf.state(), buf.slots_per_class
    mine = {check(state["samples"][c * n + i], state["labels"][c * n + i], state["extras"][c * n + i],
                  buf.num_extras)
            for c, filled in enumerate(state["filled_per_class"]) for i in range(filled)}
    return set().union(*COMM.allgather(mine))


def check_representatives():
    """Every row is a held sample, byte for byte with its label and extras; rows are distinct,
    grouped by rank; rows past n untouched; both sync and async draws; all dtypes."""
    K, N, E, shape = 3, 4, 5, (2, 3, 4)
    for dtype in DTYPES:
        with Buffer(K, N, shape, dtype, num_extras=E, seed=7) as buf:
            labels = np.random.default_rng(RANK).integers(0, K, size=40)
            for first in range(0, 40, 9):  # uneven batches, past the fill: replacements too
                x, y, e, _ = make_samples(RANK, labels[first:first + 9], first, shape, dtype, E)
                buf.add(x, y, e)
            held, total = held_everywhere(buf), sum(COMM.allgather(buf.stats()["filled"]))
            r = 5 + 3 * RANK  # ranks may ask for different r
            origins = set()
            for i in range(8):
                ox, oy, oe = outputs(buf, r + 2)
                if i % 2:
                    buf.start(r, ox, oy, oe)
                    n = buf.wait()
                else:
                    n = buf.sample(r, ox, oy, oe)
                assert n == min(r, total), (n, r, total)
                rows = [check(ox[k], oy[k], oe[k], E) for k in range(n)]
                assert len(set(rows)) == n, f"a sample drawn twice: {rows}"
                assert set(rows) <= held, set(rows) - held
                assert [w[0] for w in rows] == sorted(w[0] for w in rows), "rows not grouped by rank"
                assert (oy[n:] == -1).all() and (ox[n:] == 255).all(), "rows past n were written"
                origins |= {w[0] for w in rows}
            assert origins == set(range(P)), origins
            stats = buf.stats()
            assert stats["global_filled"] == total and stats["draws"] == 8, stats
            assert stats["filled_per_rank"] == COMM.allgather(stats["filled"]), stats
            assert stats["bytes_read_remote"] > 0 and stats["bytes_read_local"] > 0, stats


def filled(seed, K=4, N=6, shape=(8,), count=50, dtype="float32"):
    buf = Buffer(K, N, shape, dtype, seed=seed)
    labels = np.random.default_rng(100 + RANK).integers(0, K, size=count)
    x, y, _, _ = make_samples(RANK, labels, 0, shape, dtype)
    buf.add(x[:count // 2], y[:count // 2])
    buf.add(x[count // 2:], y[count // 2:])
    return buf


def draw(buf, r=9, asynchronous=False):
    ox, oy, _ = outputs(buf, r)
    if asynchronous:
        buf.start(r, ox, oy)
        n = buf.wait()
        COMM.Barrier()  # an async draw has no closing barrier: without one, a rank that is done
        return ox[:n].tobytes(), oy.tolist()  # could add() while another still reads its slots
    return ox[:buf.sample(r, ox, oy)].tobytes(), oy.tolist()


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        same = np.array_equal(a[key], b[key]) if isinstance(a[key], np.ndarray) else a[key] == b[key]
        assert same or key == "seed", f"state differs in {key}"


def check_determinism():
    """Same seed, world size and insertion order: identical draws (sync); another seed: not."""
    a, b, c = filled(5), filled(5), filled(6)
    assert_same_state(a.state(), b.state())
    differ = 0
    for _ in range(10):
        da, db, dc = draw(a), draw(b), draw(c)
        assert da == db, "same seed, different draws"
        differ += da != dc
    assert differ, "another seed gave the same draws"
    for buf in (a, b, c):
        buf.close()


def check_state_round_trip():
    """state() -> pickle -> load_state() into a buffer of another seed: the same slice, counters
    and generators, so the same later draws and insertions."""
    a = filled(3)
    for _ in range(3):
        draw(a)
    saved = pickle.loads(pickle.dumps(a.state()))
    b = Buffer(4, 6, (8,), "float32", seed=999)
    b.load_state(saved)
    assert_same_state(a.state(), b.state())
    for i in range(4):
        da, db = draw(a, asynchronous=i % 2), draw(b, asynchronous=i % 2)
        assert da == db, f"draw {i} differs after load: labels {da[1]} vs {db[1]}"
    x, y, _, _ = make_samples(RANK, np.arange(30) % 4, 500, (8,), "float32")
    a.add(x, y)
    b.add(x, y)
    assert_same_state(a.state(), b.state())
    assert draw(a) == draw(b)
    a.close()
    b.close()


def check_inconsistent_construction():
    """Ranks that disagree, or one rank with a bad argument: ValueError on every rank."""
    last = P - 1
    cases = [
        (dict(num_classes=3 + (RANK == last)), rf"rank 0 has num_classes=3 but rank {last} has num_classes=4"),
        (dict(sample_shape=(3, 2) if RANK == last else (2, 3)), r"sample_shape=\(2, 3\) but .*\(3, 2\)"),
        (dict(dtype="float16" if RANK == 0 else "uint8"), r"dtype=float16 but rank 1 has dtype=uint8"),
        (dict(num_extras=RANK), r"num_extras=0 but rank 1 has num_extras=1"),
        (dict(dtype="int16" if RANK == last else "uint8"), rf"invalid Buffer arguments on rank {last}: dtype"),
        # a type the Python layer cannot convert, and a value C++ refuses: every rank raises
        (dict(slots_per_class=2.5 if RANK == last else 2),
         rf"invalid Buffer arguments on rank {last}: slots_per_class must be an int, got 2.5"),
        (dict(seed=-1 if RANK == 0 else 0), r"invalid Buffer arguments on rank 0: seed must be in \[0, 2\*\*64\)"),
    ]
    for change, pattern in cases:
        args = dict(num_classes=3, slots_per_class=2, sample_shape=(2, 3))
        args.update(change)
        try:
            Buffer(**args)
        except ValueError as exc:
            assert re.search(pattern, str(exc)), f"{str(exc)!r} does not match {pattern!r}"
        else:
            raise AssertionError(f"no error for {change}")
    Buffer(3, 2, (2, 3)).close()  # and the ranks are still in step


def check_close_in_flight():
    """close() with a draw in flight waits for it and returns; later calls raise."""
    buf = Buffer(2, 8, (3, 64, 64), seed=1)
    x, y, _, _ = make_samples(RANK, np.arange(16) % 2, 0, (3, 64, 64), "uint8")
    buf.add(x, y)
    ox, oy, _ = outputs(buf, 16)
    buf.start(16, ox, oy)
    buf.close()
    assert buf.closed
    for call in (lambda: buf.add(x, y), lambda: buf.sample(4, ox, oy), lambda: buf.start(4, ox, oy),
                 buf.wait, buf.stats, buf.state, lambda: buf.load_state({})):
        try:
            call()
        except RuntimeError as exc:
            assert str(exc) == "buffer is closed", exc
        else:
            raise AssertionError("a call after close() did not raise")
    buf.close()  # idempotent


def make(policy, K, N, shape, dtype="uint8", **kwargs):
    """A fixed K x N buffer, or an adaptive one of the same capacity."""
    if policy == "fixed":
        return Buffer(K, N, shape, dtype, **kwargs)
    return Buffer(sample_shape=shape, dtype=dtype, capacity=K * N, **kwargs)


def check_uniform(policy="fixed"):
    """Draws are uniform over the filled slots of all ranks (chi-square over slots, ranks and
    classes), with unequally filled ranks; a sampler uniform over ranks fails the same test."""
    K, N, r, draws = 3, 8, 12, 300
    kinds = ["full", "half"] if P < 4 else ["full", "full", "half", "empty"]
    fills = [{"full": N, "half": N // 2, "empty": 0}[kinds[p % len(kinds)]] for p in range(P)]
    buf = make(policy, K, N, (6,), seed=11)
    if fills[RANK]:
        x, y, _, _ = make_samples(RANK, np.repeat(np.arange(K), fills[RANK]), 0, (6,), "uint8")
        buf.add(x, y)  # ids 0.. class-major, no replacement: an id names its slot
    cells = {(p, c, c * fills[p] + i): None for p in range(P) for c in range(K) for i in range(fills[p])}
    cells = {key: k for k, key in enumerate(cells)}
    hits = np.zeros(len(cells), np.int64)
    ox, oy, _ = outputs(buf, r)
    for _ in range(draws):
        n = buf.sample(r, ox, oy)
        assert n == r
        for k in range(n):
            hits[cells[check(ox[k], oy[k])]] += 1
    cell_rank = np.array([p for p, _, _ in cells])
    cell_class = np.array([c for _, c, _ in cells])
    inclusion = r / len(cells)
    assert inclusion_p_value(hits, inclusion) > 1e-3, hits
    from scipy.stats import chisquare

    for groups in (cell_rank, cell_class):  # marginals: proportional to the filled slots
        observed = np.bincount(groups, weights=hits)
        expected = np.bincount(groups) * hits.sum() / len(cells)
        keep = expected > 0
        if keep.sum() < 2:
            continue  # one rank: no marginal to compare
        assert chisquare(observed[keep], expected[keep]).pvalue > 1e-3, (observed, expected)

    # The same test rejects a sampler that is uniform over (non-empty) ranks, then slots.
    rng, biased = np.random.default_rng(0), np.zeros_like(hits)
    nonempty = [p for p in range(P) if fills[p]]
    if len(nonempty) < 2:  # one rank: that sampler is the uniform one
        buf.close()
        return
    for _ in range(draws):
        picked = set()
        while len(picked) < r:
            p = nonempty[rng.integers(len(nonempty))]
            picked.add(rng.choice(np.flatnonzero(cell_rank == p)))
        biased[list(picked)] += 1
    assert inclusion_p_value(biased, inclusion) < 1e-6, biased
    buf.close()


def check_uniform_adaptive():
    """The same, for the adaptive policy (one block of filled slots per rank)."""
    check_uniform("adaptive")


def check_no_torn_reads(seconds=3.0, policy="fixed"):
    """Async draws of large samples while every rank overwrites its slots (add() during the
    draw, load_state() between draws): every row is a whole sample, never a mix. Two sample
    sizes, one per transport path (hindexed get, and one get per run from 32 KiB)."""
    for shape in ((3, 64, 64), (3, 128, 128)):
        overwrite_while_drawing(shape, seconds / 2, policy)


def check_no_torn_reads_adaptive(seconds=3.0):
    """The same with the adaptive policy, where the adds bring new classes: slots change class
    (evictions) while the others read them, and the label must still match the sample."""
    check_no_torn_reads(seconds, "adaptive")


def overwrite_while_drawing(shape, seconds, policy="fixed"):
    K, N, E = 4, 12, 2
    buf = make(policy, K, N, shape, num_extras=E, seed=2)
    full = np.repeat(np.arange(K), N)
    x, y, e, _ = make_samples(RANK, full, 0, shape, "uint8", E)
    buf.add(x, y, e)
    state_a = buf.state()
    state_b = dict(state_a)
    state_b["samples"], _, state_b["extras"], _ = make_samples(RANK, full, 1000, shape, "uint8", E)
    pool_classes = K if policy == "fixed" else K + 2  # adaptive: two new classes evict slots
    pool = make_samples(RANK, np.arange(64) % pool_classes, 2000, shape, "uint8", E)
    ox, oy, oe = outputs(buf, 2 * N)
    start, rows, remote, iterations, sync = time.monotonic(), 0, 0, 0, 0
    while True:
        buf.start(2 * N, ox, oy, oe)
        for first in range(0, 64, 16):  # overwrite while the others read
            buf.add(pool[0][first:first + 16], pool[1][first:first + 16], pool[2][first:first + 16])
        n = buf.wait()
        origins = [check(ox[k], oy[k], oe[k], E)[0] for k in range(n)]
        rows, remote = rows + n, remote + sum(o != RANK for o in origins)
        buf.load_state(state_b if iterations % 2 else state_a)
        if iterations % 4 == 3:
            n = buf.sample(N, ox, oy, oe)
            for k in range(n):
                check(ox[k], oy[k], oe[k], E)
            rows, sync = rows + n, sync + 1
        iterations += 1
        if COMM.allreduce(time.monotonic() - start > seconds, op=MPI.LOR):
            break
    assert iterations >= 3 and sync and (remote > 0 or P == 1), (iterations, sync, remote)
    if policy == "adaptive":
        assert len(buf.stats()["classes"]) == K, "load_state did not restore the classes"
    if RANK == 0:
        print(f"torn-read check {shape} ({policy}): {iterations} async draws, {rows} rows checked", flush=True)
    buf.close()


def owners_read(buf, where):
    """Ask each owner, through mpi4py, to read() the (rank, slot) pairs of `where` that it
    owns; returns (x, y, extras) in the rows' order."""
    asked = COMM.alltoall([np.ascontiguousarray(where[where[:, 0] == p, 1]) for p in range(P)])
    answers = []
    for slots in asked:
        out = outputs(buf, max(len(slots), 1))
        buf.read(slots, *out)
        answers.append(tuple(a[:len(slots)] if a is not None else None for a in out))
    answers = COMM.alltoall(answers)
    x, y = np.empty((len(where), *buf.sample_shape), buf.dtype), np.empty(len(where), np.int64)
    e = np.empty((len(where), buf.num_extras), np.float32)
    for p in range(P):
        rows = where[:, 0] == p
        x[rows], y[rows] = answers[p][0], answers[p][1]
        if buf.num_extras:
            e[rows] = answers[p][2]
    return x, y, e


def check_slots_and_where():
    """add() returns each sample's slot (read() gives it back); out_where of sync and async
    draws names (owner, slot): the owner's read() of that slot is the drawn row, byte for byte.
    Then the trainer's round trip: new extras for the drawn rows go back to their owners
    (mpi4py), who write_extras() them; the owners hold them and the next draws read them."""
    K, N, E, shape = 3, 4, 3, (2, 3)
    for policy in ("fixed", "adaptive"):
        with make(policy, K, N, shape, num_extras=E, seed=4) as buf:
            labels = np.random.default_rng(RANK + 20).integers(0, K, size=30)
            x, y, e, _ = make_samples(RANK, labels, 0, shape, "uint8", E)
            slots = buf.add(x, y, e)
            kept = np.flatnonzero(slots >= 0)
            assert len(kept) == len(set(slots[kept].tolist())) == K * N, slots
            ox, oy, oe = outputs(buf, len(kept))
            buf.read(slots[kept], ox, oy, oe)
            assert np.array_equal(ox, x[kept]) and np.array_equal(oy, y[kept]) and np.array_equal(oe, e[kept])
            remote = 0
            for i in range(6):
                r = 6 + 2 * RANK
                ox, oy, oe = outputs(buf, r + 1)
                where = np.full((r + 1, 2), -1, np.int64)
                if i % 2:
                    buf.start(r, ox, oy, oe, out_where=where)
                    n = buf.wait()
                    COMM.Barrier()
                else:
                    n = buf.sample(r, ox, oy, oe, where)
                assert n == r and (where[n:] == -1).all()
                assert list(map(tuple, where[:n])) == sorted(set(map(tuple, where[:n]))), "not (rank, slot) order"
                rx, ry, rextras = owners_read(buf, where[:n])
                assert np.array_equal(rx, ox[:n]) and np.array_equal(ry, oy[:n]) and np.array_equal(rextras, oe[:n])
                for k in range(n):
                    check(ox[k], oy[k])
                    assert identify(ox[k])[0] == where[k, 0], "the row's owner is not where[k, 0]"
                remote += int((where[:n, 0] != RANK).sum())
                # EMA-like rewrite, sent back to the owners; a slot drawn by several ranks gets
                # the value of the highest rank (owners apply the sources in rank order).
                new = oe[:n] * 0.5 + 100.0 * (RANK + 1) + i
                back = COMM.alltoall([(where[:n][where[:n, 0] == p, 1], new[where[:n, 0] == p]) for p in range(P)])
                expected = {}
                for got_slots, got_extras in back:
                    if len(got_slots):
                        buf.write_extras(got_slots, got_extras)
                    expected.update(zip(got_slots.tolist(), got_extras))
                if expected:
                    held = outputs(buf, len(expected))
                    buf.read(np.array(list(expected), np.int64), *held)
                    assert np.array_equal(held[2], np.array(list(expected.values()))), "write_extras lost a row"
                COMM.Barrier()
            assert remote > 0 or P == 1


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}

if __name__ == "__main__":
    names = sys.argv[1:] or list(CHECKS)
    unknown = set(names) - set(CHECKS)
    if unknown:
        sys.exit(f"unknown checks {sorted(unknown)}; known: {sorted(CHECKS)}")
    run_checks(COMM, CHECKS, names)
