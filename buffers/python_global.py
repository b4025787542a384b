"""PythonGlobalBuffer (the users' ``nil``): global draws over all ranks' slices, in Python.

The reference the native buffer is measured against, so it is as fast as plain Python with
mpi4py gets: buffer-based (uppercase) collectives, no pickling, vectorised numpy gathers,
reused send buffers, and no copy through MPI for the rows a rank owns itself.

A draw (collective, every rank calls it; r may differ between ranks):

1. ``Allgather`` of the fill counts per block (fixed policy: one block per class; adaptive:
   one block, the filled prefix of the slice) -> the (P, B) table of filled slots;
2. n = min(r, global filled) distinct global slots, uniform over all filled slots of all
   ranks (numpy Generator seeded from (seed, rank)), ordered *grouped by owner rank*
   (ascending rank; within a rank, in draw order);
3. ``Alltoall`` of request counts, ``Alltoallv`` of requested slot numbers;
4. each owner gathers the requested rows into one contiguous send buffer, ``Alltoallv``
   returns them straight into the caller's outputs (extras in a second ``Alltoallv``);
   own rows are gathered directly into the outputs. Fixed policy: labels are the slot's class
   (slot // slots_per_class), so they need not travel; adaptive: a third ``Alltoallv``.
"""
import numpy as np

from .slice import GlobalSliceBuffer


class PythonGlobalBuffer(GlobalSliceBuffer):
    """Global rehearsal buffer in plain Python; same interface as ``cpp_loader.Buffer``.

    Example (on every rank)::

        with PythonGlobalBuffer(10, 50, (3, 32, 32), seed=1) as buf:
            buf.add(x_u8, y)
            n = buf.sample(56, out_x, out_y)   # representatives from all ranks
    """

    KIND = "buffers.PythonGlobalBuffer/1"
    COUNT_DTYPE = np.int32  # MPI counts

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        MPI = self._MPI
        self._comm = self._comm_in.Dup()  # our collectives never meet the caller's
        self._row_type = MPI.BYTE.Create_contiguous(self._storage.samples[0].nbytes).Commit()
        self._extras_type = MPI.FLOAT.Create_contiguous(self.num_extras).Commit() if self.num_extras else None

    def _gather_fill(self) -> None:
        MPI = self._MPI
        self._comm.Allgather([self._policy.blocks(), MPI.INT64_T], [self._all_filled, MPI.INT64_T])

    def _draw(self, r, out_x, out_y, out_extras, out_where):
        MPI, comm, me = self._MPI, self._comm, self._rank
        _, slots = self._choose(r, out_y, out_where)
        if not len(slots):
            return 0, 0
        n, fixed, counts = len(slots), self.policy == "fixed", self._counts

        # Who asks whom for how many.
        comm.Alltoall([counts, MPI.INT], [self._wanted, MPI.INT])
        mine = int(counts[me])
        displs = np.cumsum(counts) - counts
        own = slice(int(displs[me]), int(displs[me]) + mine)
        counts[me] = 0  # own rows never go through MPI
        wanted = self._wanted
        wanted[me] = 0
        wanted_displs = np.cumsum(wanted) - wanted
        requests = np.empty(int(wanted.sum()), dtype=np.int64)
        comm.Alltoallv([slots, (counts, displs), MPI.INT64_T],
                       [requests, (wanted, wanted_displs), MPI.INT64_T])

        # Serve the others' requests, then copy own rows straight into the outputs.
        send_x, send_e = self._send_buffers(len(requests))
        m = len(requests)
        storage = self._storage
        np.take(storage.samples, requests, axis=0, out=send_x[:m], mode="clip")
        comm.Alltoallv([send_x, (wanted, wanted_displs), self._row_type],
                       [out_x, (counts, displs), self._row_type])
        if out_extras is not None:
            np.take(storage.extras, requests, axis=0, out=send_e[:m], mode="clip")
            comm.Alltoallv([send_e, (wanted, wanted_displs), self._extras_type],
                           [out_extras, (counts, displs), self._extras_type])
        if not fixed:
            send_y = np.take(storage.labels, requests)
            comm.Alltoallv([send_y, (wanted, wanted_displs), MPI.INT64_T],
                           [out_y, (counts, displs), MPI.INT64_T])
        if mine:
            storage.read(slots[own], out_x[own], out_y[own], None if out_extras is None else out_extras[own])
        return n, mine

    def _release(self):
        self._row_type.Free()
        if self._extras_type is not None:
            self._extras_type.Free()
        self._comm.Free()
