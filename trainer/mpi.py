"""MPI, started once, with the thread level the native buffer's background thread needs."""
from __future__ import annotations

import sys

_comm = None


def world():
    """mpi4py's COMM_WORLD, initialising MPI with MPI_THREAD_MULTIPLE on first use."""
    global _comm
    if _comm is None:
        import mpi4py

        mpi4py.rc.thread_level = "multiple"
        from mpi4py import MPI

        _comm = MPI.COMM_WORLD
    return _comm


def initialized() -> bool:
    mpi = sys.modules.get("mpi4py.MPI")
    return bool(mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized())


def abort(code: int) -> None:
    """Bring every rank of the job down (mpirun then reports which rank called it)."""
    if initialized():
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)
