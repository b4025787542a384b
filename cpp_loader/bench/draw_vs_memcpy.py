"""Measure a sync draw of 56 x 3x224x224 uint8 against a numpy copy of the same bytes.

Two baselines: a copy of one 8.4 MB array into another (cache-friendly: the same 17 MB every
call), and a gather of 56 random rows from a local pool as large as one slice (np.take), which
touches memory the way a draw does.

Run: mpirun -np 2 --oversubscribe --bind-to none python cpp_loader/bench/draw_vs_memcpy.py [N]

N (slots per class, 4 classes, default 32): with N=7 on 2 ranks the buffer holds exactly the 56
samples drawn (8.4 MB in all, as cache-resident as the copy's); N=32 makes each slice 19 MB.
"""
import sys
import time

import numpy as np
from mpi4py import MPI

from cpp_loader import Buffer

R, SHAPE, K, REPEATS = 56, (3, 224, 224), 4, 200
N = int(sys.argv[1]) if len(sys.argv) > 1 else 32
comm = MPI.COMM_WORLD
rng = np.random.default_rng(comm.rank)
with Buffer(K, N, SHAPE, "uint8", seed=0) as buf:
    for c in range(K):
        buf.add(rng.integers(0, 255, (N, *SHAPE), dtype=np.uint8), np.full(N, c))
    out_x, out_y = np.empty((R, *SHAPE), np.uint8), np.empty(R, np.int64)
    src, dst = rng.integers(0, 255, (R, *SHAPE), dtype=np.uint8), np.empty((R, *SHAPE), np.uint8)
    pool = rng.integers(0, 255, (max(K * N, R), *SHAPE), dtype=np.uint8)

    steps = {"draw": lambda: buf.sample(R, out_x, out_y), "copy": lambda: np.copyto(dst, src),
             "gather": lambda: np.take(pool, rng.choice(len(pool), R, replace=False), axis=0, out=dst)}
    times = {name: [] for name in steps}
    for i in range(REPEATS + 5):  # interleaved, so that all three see the same machine load
        for name, step in steps.items():
            comm.Barrier()
            t0 = time.perf_counter()
            step()
            if i >= 5:  # warm-up
                times[name].append(time.perf_counter() - t0)
    draw, copy, gather = ((float(np.median(t)), float(np.min(t))) for t in times.values())
    local, remote = buf.stats()["bytes_read_local"], buf.stats()["bytes_read_remote"]
    rows = comm.gather((comm.rank, draw, copy, gather, remote / max(local + remote, 1)))
    if comm.rank == 0:
        print(f"{R} x {SHAPE} uint8 = {src.nbytes / 1e6:.1f} MB from {comm.size} slices of {K * N} samples; "
              f"median / min over {REPEATS} calls, ms")
        for rank, d, c, g, frac in rows:
            print(f"rank {rank}: sample() {d[0] * 1e3:.2f} / {d[1] * 1e3:.2f} ({frac:.0%} of bytes remote); "
                  f"numpy copy {c[0] * 1e3:.2f} / {c[1] * 1e3:.2f}, ratio {d[0] / c[0]:.2f}; "
                  f"numpy gather {g[0] * 1e3:.2f} / {g[1] * 1e3:.2f}, ratio {d[0] / g[0]:.2f}")
