"""Rewritten extras (DER's logits) are never read half-written by another rank.

Runs tests/mpi_jobs/extras_rewrite.py under ``mpirun -np 2`` for each buffer kind: rank 0
rewrites the extras of all its slots (write_extras, rows of 64 equal floats, a new value each
time) while both ranks draw them (rank 1 remotely); every row read must be all-equal.
"""
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "mpi_jobs" / "extras_rewrite.py"
pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("kind", ["native", "python"])
def test_rewritten_extras_are_never_torn(mpirun, kind):
    proc = mpirun(2, [sys.executable, str(JOB), kind, "3"], timeout=180)
    assert f"ok extras_rewrite {kind}" in proc.stdout, proc.stdout + proc.stderr
