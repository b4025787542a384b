"""cpp_loader: a rehearsal buffer sampled globally across MPI ranks with one-sided reads.

Each rank holds a class-balanced reservoir slice (K classes x N slots) in an MPI window; a
draw picks representatives uniformly over the filled slots of *all* ranks and reads remote
ones with MPI_Get, optionally on a background thread (start()/wait()). See README.md.

Example::

    from cpp_loader import Buffer
    with Buffer(num_classes=10, slots_per_class=50, sample_shape=(3, 32, 32)) as buf:
        buf.add(x, y)                       # local, reservoir insertion
        n = buf.sample(64, out_x, out_y)    # collective, global uniform draw
"""
from ._extension import _core
from .buffer import STATE_KIND, Buffer

MPIError = _core.MPIError  # an MPI call failed (a RuntimeError carrying MPI_Error_string)
LabelError = _core.LabelError  # a label outside [0, num_classes) (IndexError and ValueError)

__all__ = ["Buffer", "LabelError", "MPIError", "STATE_KIND"]
