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

from .reservoir import SliceBuffer


class PythonGlobalBuffer(SliceBuffer):
    """Global rehearsal buffer in plain Python; same interface as ``cpp_loader.Buffer``.

    Example (on every rank)::

        with PythonGlobalBuffer(10, 50, (3, 32, 32), seed=1) as buf:
            buf.add(x_u8, y)
            n = buf.sample(56, out_x, out_y)   # representatives from all ranks
    """

    KIND = "buffers.PythonGlobalBuffer/1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        MPI = self._MPI
        self._comm = self._comm_in.Dup()  # our collectives never meet the caller's
        P, K = self._world_size, len(self._policy.blocks())
        self._all_filled = np.zeros((P, K), dtype=np.int64)
        self._counts = np.zeros(P, dtype=np.int32)
        self._wanted = np.zeros(P, dtype=np.int32)
        self._row_type = MPI.BYTE.Create_contiguous(self._sample_bytes).Commit()
        self._extras_type = (MPI.FLOAT.Create_contiguous(self._num_extras).Commit()
                             if self._num_extras else None)
        self._send_x = np.empty((0, *self._sample_shape), dtype=self._dtype)
        self._send_e = np.empty((0, self._num_extras), dtype=np.float32)

    def _send_buffers(self, rows):
        """Grow-only send buffers: reused across draws."""
        if self._send_x.shape[0] < rows:
            self._send_x = np.empty((rows, *self._sample_shape), dtype=self._dtype)
            if self._num_extras:
                self._send_e = np.empty((rows, self._num_extras), dtype=np.float32)
        return self._send_x, self._send_e

    def _draw(self, r, out_x, out_y, out_extras):
        MPI, comm = self._MPI, self._comm
        P, me = self._world_size, self._rank
        K = self._all_filled.shape[1]  # blocks per rank
        comm.Allgather([self._policy.blocks(), MPI.INT64_T], [self._all_filled, MPI.INT64_T])
        per_rank = self._all_filled.sum(axis=1)
        total = int(per_rank.sum())
        self._counters["filled_per_rank"] = per_rank.tolist()
        self._counters["global_filled"] = total
        n = min(r, total)  # total is the same on every rank: all skip together when 0
        if total == 0:
            return 0, 0

        # Which global slots: uniform over the filled ones, then grouped by owner.
        flat = self._all_filled.reshape(-1)
        cum = np.cumsum(flat)
        picks = self._draw_rng.choice(total, n, replace=False)
        cell = np.searchsorted(cum, picks, side="right")  # owner * K + block
        owner = cell // K
        slots = (cell % K) * self._policy.stride + picks - (cum[cell] - flat[cell])
        order = np.argsort(owner, kind="stable")
        slots = slots[order]
        fixed = self._policy_name == "fixed"
        if fixed:
            np.floor_divide(slots, self._slots_per_class, out=out_y[:n], casting="unsafe")

        # Who asks whom for how many.
        counts = self._counts
        counts[:] = np.bincount(owner, minlength=P)
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
        np.take(self._samples, requests, axis=0, out=send_x[:m], mode="clip")
        comm.Alltoallv([send_x, (wanted, wanted_displs), self._row_type],
                       [out_x, (counts, displs), self._row_type])
        if out_extras is not None:
            np.take(self._extras, requests, axis=0, out=send_e[:m], mode="clip")
            comm.Alltoallv([send_e, (wanted, wanted_displs), self._extras_type],
                           [out_extras, (counts, displs), self._extras_type])
        if not fixed:
            send_y = np.take(self._labels, requests)
            comm.Alltoallv([send_y, (wanted, wanted_displs), MPI.INT64_T],
                           [out_y, (counts, displs), MPI.INT64_T])
        if mine:
            np.take(self._samples, slots[own], axis=0, out=out_x[own], mode="clip")
            if not fixed:
                self._draw_labels(slots[own], out_y[own])
            if out_extras is not None:
                np.take(self._extras, slots[own], axis=0, out=out_extras[own], mode="clip")
        return n, mine

    def _release(self):
        self._row_type.Free()
        if self._extras_type is not None:
            self._extras_type.Free()
        self._comm.Free()
