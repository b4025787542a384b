"""Exit with buffers still open, one with a draw in flight: the atexit hook closes them (in
creation order, collectively) before mpi4py finalizes MPI, and the job ends cleanly.

    mpirun -np P python tests/mpi_jobs/native_exit_open.py
"""
import atexit

import numpy as np

from buffer_patterns import make_samples, outputs


@atexit.register  # registered before cpp_loader's hook, so it runs after it
def report():
    assert first.closed and second.closed, "the atexit hook left a buffer open"
    print(f"rank {first.rank}: buffers closed at exit", flush=True)


from cpp_loader import Buffer  # noqa: E402

first = Buffer(2, 4, (6,), seed=1)
second = Buffer(3, 2, (3, 4), "float32", num_extras=1)
x, y, _, _ = make_samples(first.rank, np.arange(8) % 2, 0, (6,), "uint8")
first.add(x, y)
OUT = outputs(first, 5)  # module globals: alive until the hook has run
first.start(5, *OUT)
print(f"rank {first.rank} leaving with open buffers", flush=True)
