"""With MPI below MPI_THREAD_MULTIPLE, sync draws work and start() says what is missing.

    mpirun -np P python tests/mpi_jobs/native_thread_level.py
"""
import mpi4py

mpi4py.rc.thread_level = "serialized"
from mpi4py import MPI  # noqa: E402

from buffer_patterns import check, make_samples, outputs  # noqa: E402
from cpp_loader import Buffer  # noqa: E402
from native_common import run_checks  # noqa: E402


def check_serialized():
    assert MPI.Query_thread() == MPI.THREAD_SERIALIZED
    with Buffer(2, 4, (6,), seed=1) as buf:
        x, y, _, _ = make_samples(buf.rank, [0, 1, 1, 0, 1], 0, (6,), "uint8")
        buf.add(x, y)
        ox, oy, _ = outputs(buf, 4)
        for k in range(buf.sample(4, ox, oy)):
            check(ox[k], oy[k])
        try:
            buf.start(4, ox, oy)
        except RuntimeError as exc:
            assert "MPI_THREAD_MULTIPLE" in str(exc) and "MPI_THREAD_SERIALIZED" in str(exc), exc
        else:
            raise AssertionError("start() without MPI_THREAD_MULTIPLE did not raise")


if __name__ == "__main__":
    run_checks(MPI.COMM_WORLD, {"serialized": check_serialized}, ["serialized"])
