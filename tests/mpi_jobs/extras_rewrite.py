"""Rewriting extras while another rank reads them: never a half-rewritten row (2 ranks).

    mpirun -np 2 python tests/mpi_jobs/extras_rewrite.py KIND [SECONDS] [NUM_EXTRAS]

KIND is a buffers.make_buffer kind ('native' or 'python'). Rank 0 fills its slice, rank 1
holds nothing, so every representative comes from rank 0. Each round, both ranks start an
asynchronous draw of every slot; rank 0 then rewrites the extras of all its slots with
write_extras(), rows whose values are all equal to the rewrite's number (1, 2, ...), over and
over until rank 1 reports that its draw has finished, so the rewrites overlap rank 1's reads
(remote) and rank 0's own draw (local, on the worker thread). Every drawn row must be
all-equal (all of one rewrite, never a mix of two) and hold a number rank 0 wrote; its sample
and label must be the slot's own. Every fourth round also draws synchronously (sample()).
Launched by tests/test_extras_rewrite.py; prints "ok extras_rewrite KIND" on rank 0.
"""
import sys
import time

import numpy as np
from mpi4py import MPI

from buffers import make_buffer

COMM = MPI.COMM_WORLD
RANK = COMM.rank
DONE = 17  # tag of rank 1's "my draw has finished"


def check_rows(n, ox, oy, oe, last_written, where):
    """Rows [0, n): all-equal extras of a value rank 0 wrote, sample and label of their slot."""
    rows = oe[:n]
    first = rows[:, :1]
    torn = np.flatnonzero((rows != first).any(axis=1))
    assert not len(torn), f"{where}: row {torn[0]} is torn: {np.unique(rows[torn[0]])}"
    values = first[:, 0]
    assert (values == np.round(values)).all() and (values >= 0).all() and (values <= last_written).all(), \
        f"{where}: values {np.unique(values)} were never written (last {last_written})"
    slots = ox[:n, 0].astype(np.int64) + 256 * ox[:n, 1].astype(np.int64)  # the sample names its slot
    assert (oy[:n] == slots % 7).all(), f"{where}: a label does not match its sample"
    return set(values.tolist())


def main():
    kind = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    E = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    assert COMM.size == 2, "run on exactly 2 ranks"
    C = 512
    buf = make_buffer(kind, sample_shape=(4,), capacity=C, num_extras=E, seed=3)
    mine = np.arange(C, dtype=np.int64)
    if RANK == 0:  # slot s holds sample s (its first two bytes) of label s % 7, extras all 0
        x = np.zeros((C, 4), np.uint8)
        x[:, 0], x[:, 1] = mine % 256, mine // 256
        slots = buf.add(x, mine % 7, np.zeros((C, E), np.float32))
        assert np.array_equal(slots, mine), "the empty slice did not fill in order"
    ox, oy, oe = np.zeros((C, 4), np.uint8), np.zeros(C, np.int64), np.zeros((C, E), np.float32)
    value, rounds, rows, seen_values = 0, 0, 0, set()
    start = time.monotonic()
    while True:
        buf.start(C, ox, oy, oe)
        if RANK == 0:
            done = COMM.irecv(source=1, tag=DONE)
            while True:  # rewrite everything until rank 1 has read, at least once
                value += 1
                buf.write_extras(mine, np.full((C, E), value, np.float32))
                if done.test()[0]:
                    break
            n = buf.wait()
        else:
            n = buf.wait()
            COMM.send(None, dest=0, tag=DONE)
        last = COMM.bcast(value, root=0)
        assert n == C, (n, C)
        seen_values |= check_rows(n, ox, oy, oe, last, f"round {rounds} (async)")
        rows += n
        if rounds % 4 == 3:
            n = buf.sample(C, ox, oy, oe)
            seen_values |= check_rows(n, ox, oy, oe, last, f"round {rounds} (sample)")
            assert (oe[:n] == last).all(), "a synchronous draw after the rewrites read old extras"
            rows += n
        rounds += 1
        if COMM.allreduce(time.monotonic() - start > seconds, op=MPI.LOR):
            break
    seen = COMM.allgather(len(seen_values))
    assert rounds >= 4, rounds
    buf.close()
    if RANK == 0:
        print(f"extras_rewrite {kind}: {rounds} rounds, {value} rewrites of {C} rows x {E} floats, "
              f"{rows} rows checked on rank 0, distinct values read per rank {seen}", flush=True)
        print(f"ok extras_rewrite {kind}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001 - any failure must end both ranks, never leave one waiting
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        COMM.Abort(1)
