"""TorchGlobalBuffer: PythonGlobalBuffer's global draws over torch.distributed instead of MPI.

For jobs whose ranks share no MPI communicator (``torchrun``): the same algorithm as
python_global.py -- the same draw, the same state keys, the same errors and, for the same seed
and world size, the same representatives -- with the collectives of a gloo process group of its
own, made by ``dist.new_group(backend="gloo")`` over all ranks of the default group, so the
buffer's traffic never mixes with the training's (which may be NCCL on GPUs) and every tensor it
moves is a CPU tensor viewing numpy memory (no copies in or out).

A draw (collective, every rank calls it; r may differ between ranks):

1. ``all_gather`` of the fill counts per block -> the (P, B) table of filled slots;
2. ``draw_slots``: n = min(r, global filled) distinct global slots, grouped by owner rank;
3. ``all_to_all_single`` of request counts, then of the requested slot numbers (split sizes);
4. each owner gathers the requested rows into one send buffer, ``all_to_all_single`` returns
   them straight into the caller's outputs as bytes (any dtype), extras in a second one; fixed
   policy: the labels are the slots' classes, adaptive: a third one carries them. A rank's own
   rows take the same path (gloo copies them locally), so the outputs are written in one call.

``comm`` is accepted for the common constructor signature and ignored: the ranks are those of
torch.distributed's default group, which must be initialised (``torchrun`` +
``dist.init_process_group``). The arguments' agreement across ranks runs over the buffer's group
(``dist.all_gather_object``). ``close()`` is collective and destroys the group. A
``PythonGlobalBuffer`` state loads into this buffer (and continues with the same draws).
"""
from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist

from .python_global import PythonGlobalBuffer
from .slice import GlobalSliceBuffer

NOT_INITIALIZED = ("the torch.distributed buffer needs torch.distributed initialised on every rank "
                   "(torchrun, then dist.init_process_group); with MPI use the 'python' or 'native' kind")


class GroupComm:
    """The part of an mpi4py communicator SliceBuffer uses (the arguments' agreement, rank and
    size), over a torch.distributed process group; also what RehearsalMemory gathers the
    rewritten extras with."""

    def __init__(self, group):
        self.group = group
        self._rank, self._size = dist.get_rank(group), dist.get_world_size(group)

    def Get_rank(self) -> int:  # noqa: N802  (mpi4py's names)
        return self._rank

    def Get_size(self) -> int:  # noqa: N802
        return self._size

    def allgather(self, obj) -> list:
        out = [None] * self._size
        dist.all_gather_object(out, obj, group=self.group)
        return out


class TorchGlobalBuffer(GlobalSliceBuffer):
    """Global rehearsal buffer over torch.distributed (gloo); same interface as the others.

    Example (on every rank of a torchrun job, after dist.init_process_group)::

        with TorchGlobalBuffer(sample_shape=(3, 32, 32), capacity=1000, seed=1) as buf:
            buf.add(x_u8, y)
            n = buf.sample(56, out_x, out_y)   # representatives from all ranks
    """

    KIND = "buffers.TorchGlobalBuffer/1"

    def __init__(self, *args, **kwargs):
        self._group = None
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._destroy_group()  # every rank raises together (agree() is collective)
            raise
        self._filled_rows = list(torch.from_numpy(self._all_filled).unbind(0))
        self._sample_bytes = self._storage.samples[0].nbytes

    def _communicator(self, comm):
        """comm is ignored: the ranks are torch.distributed's, over a gloo group of our own."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(NOT_INITIALIZED)
        self._group = dist.new_group(backend="gloo")  # collective over the default group
        self.comm = GroupComm(self._group)
        return self.comm

    def _bytes(self, rows: np.ndarray, n: int) -> torch.Tensor:
        """Rows [0, n) of a sample array as an (n, row bytes) uint8 tensor sharing its memory."""
        return torch.from_numpy(rows[:n].view(np.uint8).reshape(n, self._sample_bytes))

    def _gather_fill(self) -> None:
        blocks = torch.from_numpy(np.ascontiguousarray(self._policy.blocks(), dtype=np.int64))
        dist.all_gather(self._filled_rows, blocks, group=self._group)

    def _draw(self, r, out_x, out_y, out_extras, out_where):
        group, me = self._group, self._rank
        _, slots = self._choose(r, out_y, out_where)
        if not len(slots):
            return 0, 0
        n, fixed, counts, wanted = len(slots), self.policy == "fixed", self._counts, self._wanted

        # Who asks whom for how many (own requests included: gloo copies them locally).
        dist.all_to_all_single(torch.from_numpy(wanted), torch.from_numpy(counts), group=group)
        mine = int(counts[me])
        to_me, from_me = counts.tolist(), wanted.tolist()
        requests = np.empty(sum(from_me), dtype=np.int64)
        dist.all_to_all_single(torch.from_numpy(requests), torch.from_numpy(np.ascontiguousarray(slots)),
                               output_split_sizes=from_me, input_split_sizes=to_me, group=group)

        # Serve the requests; the rows land in the outputs in the draw's order (grouped by owner).
        m = len(requests)
        send_x, send_e = self._send_buffers(m)
        storage = self._storage
        np.take(storage.samples, requests, axis=0, out=send_x[:m], mode="clip")
        dist.all_to_all_single(self._bytes(out_x, n), self._bytes(send_x, m),
                               output_split_sizes=to_me, input_split_sizes=from_me, group=group)
        if out_extras is not None:
            np.take(storage.extras, requests, axis=0, out=send_e[:m], mode="clip")
            dist.all_to_all_single(torch.from_numpy(out_extras[:n]), torch.from_numpy(send_e[:m]),
                                   output_split_sizes=to_me, input_split_sizes=from_me, group=group)
        if not fixed:
            send_y = np.take(storage.labels, requests)
            dist.all_to_all_single(torch.from_numpy(out_y[:n]), torch.from_numpy(send_y),
                                   output_split_sizes=to_me, input_split_sizes=from_me, group=group)
        return n, mine

    def load_state(self, state) -> None:
        """Also takes a PythonGlobalBuffer's state: the same algorithm and generator streams."""
        if isinstance(state, Mapping) and state.get("kind") == PythonGlobalBuffer.KIND:
            state = {**state, "kind": self.KIND}
        super().load_state(state)

    def _release(self):
        self._destroy_group()

    def _destroy_group(self):
        group, self._group = self._group, None
        if group is not None and dist.is_initialized():  # gone already with the default group
            dist.barrier(group=group)
            dist.destroy_process_group(group)
