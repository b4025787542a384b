"""The adaptive insertion policy, the same checks on every buffer kind; run by
tests/test_adaptive_buffer.py under ``mpirun -np 1, 2 and 4``.

    mpirun -np P python tests/mpi_jobs/adaptive_checks.py KIND [KIND ...]   # native python local

Rank 0 prints "ok CHECK KIND" after each; a failure prints its traceback and aborts the job.
"""
import sys

import numpy as np
from mpi4py import MPI

from buffer_patterns import check, inclusion_p_value, make_samples, outputs
from buffers import buffer_class
from native_common import run_checks

COMM = MPI.COMM_WORLD
RANK, P = COMM.rank, COMM.size
LABELS = [0, 7, 42, 3, 250, 11]  # never declared up front, in this order of arrival


def quotas(capacity, k):
    """The rule: equal shares, the remainder to the earliest classes."""
    return [capacity // k + (i < capacity % k) for i in range(k)]


def held_ids(buf):
    """(label, id) of every sample this rank's slice holds, checked byte for byte."""
    state = buf.state()
    return [check(x, y)[1:] for x, y in zip(state["samples"], state["labels"]) if y >= 0]


def inclusion_after_quotas_shrink(kind, trials=600):
    """30 samples of class 0 fill M=12 slots alone; classes 7 and 42 (20 each) then shrink the
    quotas to 4: every sample of each class must be held with probability 4/seen (chi-square,
    pooled over ranks); one slot per class more or less would fail it."""
    cls, M = buffer_class(kind), 12
    stream = np.repeat([0, 7, 42], [30, 20, 20])
    x, y, _, ids = make_samples(RANK, stream, 0, (6,), "uint8")
    hits = np.zeros(len(stream), np.int64)
    for t in range(trials // P):
        buf = cls(sample_shape=(6,), capacity=M, seed=t)
        for first in range(0, len(stream), 7):  # batches that straddle the class boundaries
            buf.add(x[first:first + 7], y[first:first + 7])
        stats = buf.stats()
        assert stats["classes"] == [0, 7, 42] and stats["filled_per_class"] == [4, 4, 4], stats
        for _, sample_id in held_ids(buf):
            hits[sample_id] += 1
        buf.close()
    hits = COMM.allreduce(hits)
    for label, seen in ((0, 30), (7, 20), (42, 20)):
        counts = hits[stream == label]
        assert counts.sum() == (trials // P) * P * 4, (label, counts.sum())
        p = inclusion_p_value(counts, 4 / seen)
        assert p > 1e-3, f"{kind}: class {label} held counts {counts} not uniform (p={p:.1e})"


def balance_and_no_slot_wasted(kind):
    """Tasks of two new classes each, unequal amounts per rank (the last of 4 ranks sees
    nothing): after every batch all min(M, seen) slots are used, and once every class has
    reached its quota the classes hold exactly their quotas (within one slot of each other)."""
    cls, M = buffer_class(kind), 17  # 17 mod k != 0: remainders
    per_task = 0 if (P == 4 and RANK == 3) else 15 + 10 * RANK
    buf = cls(sample_shape=(6,), capacity=M, seed=3)
    seen, next_id, arrived = 0, 0, []
    rng = np.random.default_rng(RANK)
    for task in range(3):
        labels = rng.permutation(np.repeat(LABELS[2 * task:2 * task + 2], per_task))
        for first in range(0, len(labels), 8):
            batch = labels[first:first + 8]
            x, y, _, _ = make_samples(RANK, batch, next_id, (6,), "uint8")
            next_id += len(batch)
            buf.add(x, y)
            seen += len(batch)
            stats = buf.stats()
            assert stats["filled"] == min(M, seen) == sum(stats["filled_per_class"]), stats
            assert len(held_ids(buf)) == stats["filled"]
        stats = buf.stats()
        if per_task:
            k = 2 * (task + 1)  # the classes in order of arrival, whatever labels they have
            assert stats["classes"][:k - 2] == arrived and set(stats["classes"]) == set(LABELS[:k]), stats
            arrived = stats["classes"]
            if per_task >= M // 2 + 1:
                assert stats["filled_per_class"] == quotas(M, k), (stats, quotas(M, k))
                assert max(stats["filled_per_class"]) - min(stats["filled_per_class"]) <= 1
    # global draws: every filled slot of every rank, uniform (chi-square), byte-exact rows
    mine = held_ids(buf)
    everyone = [(p, *w) for p, ids in enumerate(COMM.allgather(mine)) for w in ids]
    cells = {w: k for k, w in enumerate(everyone if kind != "local" else [(RANK, *w) for w in mine])}
    hits = np.zeros(len(cells), np.int64)
    r, draws = 6, 400
    ox, oy, _ = outputs(buf, r)
    for _ in range(draws):
        n = buf.sample(r, ox, oy)
        assert n == min(r, len(cells)), (n, len(cells))
        rows = [check(ox[i], oy[i]) for i in range(n)]
        assert len(set(rows)) == n, rows
        for row in rows:
            hits[cells[row]] += 1
    if cells:  # (a local buffer on the rank that saw nothing draws nothing)
        assert inclusion_p_value(hits, r / len(cells)) > 1e-3, hits
    buf.close()


def determinism(kind):
    """Same seed and data: the same slice, byte for byte, whatever the batching."""
    cls = buffer_class(kind)
    labels = np.random.default_rng(RANK).choice(LABELS, size=120)
    x, y, _, _ = make_samples(RANK, labels, 0, (5,), "uint8")
    a, b = cls(sample_shape=(5,), capacity=10, seed=9), cls(sample_shape=(5,), capacity=10, seed=9)
    a.add(x, y)
    for first in range(0, 120, 13):
        b.add(x[first:first + 13], y[first:first + 13])
    sa, sb = a.state(), b.state()
    for key in ("samples", "labels", "classes", "seen_per_class"):
        assert np.array_equal(sa[key], sb[key]), key
    a.close()
    b.close()


CHECKS = {"inclusion": inclusion_after_quotas_shrink, "balance": balance_and_no_slot_wasted,
          "determinism": determinism}

if __name__ == "__main__":
    kinds = sys.argv[1:] or ["native", "python", "local"]
    named = {f"{name} {kind}": (lambda f=fn, k=kind: f(k)) for kind in kinds for name, fn in CHECKS.items()}
    run_checks(COMM, named, list(named))
