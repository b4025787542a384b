"""Helpers shared by the native-buffer test jobs and tests/test_native_buffer.py.

Nothing here starts MPI: importing it is safe in the single-process tests.
"""
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
from buffer_patterns import check, make_samples  # noqa: E402,F401  (re-exported for the jobs)


def outputs(buf, r):
    """Output arrays for r representatives, pre-filled with junk so stale rows show."""
    return (np.full((r, *buf.sample_shape), 255, buf.dtype), np.full(r, -1, np.int64),
            np.full((r, buf.num_extras), -1.0, np.float32) if buf.num_extras else None)


def uniform_p_value(counts, inclusion):
    """Chi-square p-value for "every cell is drawn with the same probability".

    A draw includes a fixed number of distinct cells, each with probability `inclusion`, so a
    cell's count over many draws is Binomial, whose variance is (1 - inclusion) times the
    Poisson one: dividing Pearson's statistic by (1 - inclusion) gives a chi2(cells - 1)."""
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.mean()
    stat = ((counts - expected) ** 2).sum() / expected / (1.0 - inclusion)
    return float(chi2.sf(stat, len(counts) - 1))


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
