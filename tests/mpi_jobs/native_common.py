"""run_checks, shared by the mpirun jobs of tests/mpi_jobs (the sample and output helpers live
in tests/buffer_patterns.py). Nothing here starts MPI.
"""
import sys
import traceback


def run_checks(comm, checks, names):
    """Run the named checks in order; rank 0 prints "ok NAME" after each. On any failure the
    traceback is printed and the whole job aborts, so no rank waits in a collective."""
    try:
        for name in names:
            checks[name]()
            comm.Barrier()
            if comm.rank == 0:
                print("ok", name, flush=True)
    except BaseException:  # noqa: BLE001 - any failure must end every rank
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
