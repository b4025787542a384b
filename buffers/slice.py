"""SliceBuffer: one rank's slice and the whole public surface of the plain-Python buffers (the
twin of cpp_loader's buffer.cpp), composing the argument checks (arguments.py), the storage
(storage.py) and the insertion policy (reservoir.py). Subclasses say only how a draw picks
and fetches rows (``_draw``): every rank's slice (python_global.py) or its own (local.py).

No locks: a plain-Python buffer is used from one thread, and a peer reads this slice only
inside a collective this rank takes part in, so add() and write_extras() are never seen half
done by a reader.
"""
import time
from collections.abc import Mapping

import numpy as np

from .arguments import (
    CLOSED,
    FLOAT32,
    agree,
    as_array,
    check_array,
    check_inputs,
    check_outputs,
    check_seed,
    check_slots,
    describe,
)
from .reservoir import AdaptiveReservoir, ClassBalancedReservoir
from .sampler import draw_slots
from .storage import SliceStorage

STATE_ARRAYS = ("samples", "labels", "extras")
STATE_COUNTERS = ("classes", "seen_per_class", "filled_per_class")
STATE_GENERATORS = ("insertion_generator", "draw_generator")


class SliceBuffer:
    """See buffers/__init__.py (RehearsalBuffer) for the interface.

    Subclasses set ``KIND`` and implement ``_draw(r, out_x, out_y, out_extras, out_where) -> (n, local)``."""

    KIND = "buffers.SliceBuffer/1"

    def __init__(self, num_classes=None, slots_per_class=None, sample_shape=None, dtype="uint8",
                 num_extras=0, seed=0, comm=None, *, capacity=None, policy=None):
        comm = self._communicator(comm)
        error, config = None, None
        try:
            config = describe(num_classes, slots_per_class, sample_shape, dtype, num_extras, capacity, policy)
            seed = check_seed(seed)
        except (TypeError, ValueError) as exc:
            error = exc
        agree(comm, config, error)
        self._config = config
        self._comm_in = comm
        self._rank, self._world_size = comm.Get_rank(), comm.Get_size()
        self._seed = seed
        self._dtype = np.dtype(config["dtype"])
        self._storage = SliceStorage(config["capacity"], config["sample_shape"], self._dtype, config["num_extras"])
        insert_seq, draw_seq = np.random.SeedSequence([seed, self._rank]).spawn(2)
        insert_rng = np.random.default_rng(insert_seq)
        self._policy = (AdaptiveReservoir(config["capacity"], insert_rng) if config["policy"] == "adaptive"
                        else ClassBalancedReservoir(config["num_classes"], config["slots_per_class"], insert_rng))
        self._draw_rng = np.random.default_rng(draw_seq)
        self._counters = dict(filled_per_rank=[0] * self._world_size, global_filled=0,
                              last_draw_seconds=0.0, bytes_read_remote=0, bytes_read_local=0, draws=0)
        self._pending = None
        self._closed = False

    def _communicator(self, comm):
        """What the ranks agree over and rank/world size come from: an mpi4py communicator
        (default COMM_WORLD). A transport without MPI returns an object with ``allgather(obj)``,
        ``Get_rank()`` and ``Get_size()`` instead (torch_global.py)."""
        from mpi4py import MPI

        self._MPI = MPI
        return MPI.COMM_WORLD if comm is None else comm

    # ----------------------------------------------------------------- description
    rank = property(lambda self: self._rank)
    world_size = property(lambda self: self._world_size)
    num_classes = property(lambda self: self._config["num_classes"])
    slots_per_class = property(lambda self: self._config["slots_per_class"])
    sample_shape = property(lambda self: self._config["sample_shape"])
    dtype = property(lambda self: self._dtype)
    num_extras = property(lambda self: self._config["num_extras"])
    closed = property(lambda self: self._closed)
    policy = property(lambda self: self._config["policy"])
    capacity = property(lambda self: self._config["capacity"])

    def __repr__(self):
        c = self._config
        return (f"{type(self).__name__}(rank={self._rank}/{self._world_size}, policy={c['policy']}, "
                f"capacity={c['capacity']}, K={c['num_classes']}, N={c['slots_per_class']}, "
                f"shape={c['sample_shape']}, dtype={c['dtype']}, extras={c['num_extras']}, "
                f"filled={self._policy.filled_total}{', closed' if self._closed else ''})")

    def _open(self):
        if self._closed:
            raise RuntimeError(CLOSED)

    # ----------------------------------------------------------------- local slots
    def add(self, x, y, extras=None) -> np.ndarray:
        """Local. Offer a batch to the reservoir (reservoir.py gives the rules). Returns the slot
        each sample took, -1 where it was not kept (or a later sample of the batch took its slot).

        x: (n, *sample_shape) in the buffer's dtype, C-contiguous; y: (n,) int64/int32, in
        [0, num_classes) (fixed, or adaptive with num_classes given) or >= 0; extras:
        (n, num_extras) float32 iff num_extras > 0. numpy arrays or CPU tensors."""
        self._open()
        x, y, extras = check_inputs(self._config, x, y, extras)
        taken = np.full(len(y), -1, dtype=np.int64)
        if len(y) == 0:
            return taken
        src, dst = self._policy.place(y)
        self._storage.write(src, dst, x, y, extras)
        taken[slice(None) if src is None else src] = dst
        return taken

    def read(self, slots, out_x, out_y, out_extras=None) -> None:
        """Local. The contents of these filled slots of this rank's slice into rows [0, m)."""
        self._open()
        slots = check_slots(slots, self.capacity, self._storage.labels)
        _, out_x, out_y, out_extras, _ = check_outputs(self._config, max(1, len(slots)), out_x, out_y, out_extras)
        self._storage.read(slots, out_x, out_y, out_extras)

    def write_extras(self, slots, extras) -> None:
        """Local. Rewrite the extras (e.g. DER's stored logits) of these filled slots; a reader
        sees each row all old or all new (module docstring)."""
        self._open()
        if not self.num_extras:
            raise ValueError("this buffer stores no extras (num_extras=0)")
        slots = check_slots(slots, self.capacity, self._storage.labels)
        extras = as_array(extras, "extras")
        if check_array(extras, "extras", FLOAT32, (self.num_extras,)) != len(slots):
            raise ValueError(f"extras has {extras.shape[0]} rows but slots has {len(slots)}")
        self._storage.write_extras(slots, extras)

    # ----------------------------------------------------------------- draws
    def sample(self, r, out_x, out_y, out_extras=None, out_where=None) -> int:
        """Draw n = min(r, available) distinct representatives into rows [0, n) of the outputs
        (out_where: (owner rank, slot) of each); return n. Collective for the global buffer."""
        self._open()
        if self._pending is not None:
            raise RuntimeError("a draw started with start() is pending: call wait() first")
        r, out_x, out_y, out_extras, out_where = check_outputs(self._config, r, out_x, out_y, out_extras, out_where)
        t0 = time.perf_counter()
        n, local = self._draw(r, out_x, out_y, out_extras, out_where)
        c = self._counters
        c["last_draw_seconds"] = time.perf_counter() - t0
        c["bytes_read_local"] += local * self._storage.row_bytes
        c["bytes_read_remote"] += (n - local) * self._storage.row_bytes
        c["draws"] += 1
        return n

    def start(self, r, out_x, out_y, out_extras=None, out_where=None) -> None:
        """Begin a draw into the outputs (kept alive by the caller until wait()). The Python
        buffers do the whole draw here; wait() only hands back n."""
        self._open()
        if self._pending is not None:
            raise RuntimeError("start() called twice without wait(): call wait() first")
        self._pending = self.sample(r, out_x, out_y, out_extras, out_where)

    def wait(self) -> int:
        """Finish the draw begun by start(); return n."""
        self._open()
        if self._pending is None:
            raise RuntimeError("wait() without a pending start()")
        n, self._pending = self._pending, None
        return n

    def _draw(self, r, out_x, out_y, out_extras, out_where):
        """-> (n, how many of the n came from this rank's own slice)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- stats and state
    def stats(self) -> dict:
        self._open()
        classes, seen, filled = self._policy.counters()
        c = self._counters
        return {"classes": classes.tolist(), "seen_per_class": seen.tolist(), "filled_per_class": filled.tolist(),
                "filled": self._policy.filled_total, "capacity": self.capacity,
                "filled_per_rank": list(c["filled_per_rank"]), "global_filled": int(c["global_filled"]),
                "last_draw_seconds": float(c["last_draw_seconds"]),
                "bytes_read_remote": int(c["bytes_read_remote"]), "bytes_read_local": int(c["bytes_read_local"]),
                "draws": int(c["draws"])}

    def _description(self) -> dict:
        return {k: self._config[k] for k in ("num_classes", "slots_per_class", "sample_shape", "dtype",
                                             "num_extras", "policy", "capacity")}

    def state(self) -> dict:
        """Everything needed to continue exactly, under the native buffer's keys: slot contents,
        counters, generator states."""
        self._open()
        counters = dict(zip(STATE_COUNTERS, self._policy.counters()))
        return {"kind": self.KIND, **self._description(), "seed": self._seed, "rank": self._rank,
                "world_size": self._world_size, **self._storage.arrays(), **counters,
                "insertion_generator": self._policy.rng.bit_generator.state,
                "draw_generator": self._draw_rng.bit_generator.state}

    def load_state(self, state) -> None:
        """Restore what state() returned (by a buffer of the same kind and shapes)."""
        self._open()
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from Buffer.state(), got {type(state).__name__}")
        if state.get("kind") != self.KIND:
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected {self.KIND!r}")
        missing = [k for k in (*self._description(), *STATE_ARRAYS, *STATE_COUNTERS, *STATE_GENERATORS)
                   if k not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)}")
        differs = [f"{k}: state has {tuple(state[k]) if k == 'sample_shape' else state[k]!r}, buffer has {mine!r}"
                   for k, mine in self._description().items()
                   if (tuple(state[k]) if k == "sample_shape" else state[k]) != mine]
        if differs:
            raise ValueError("state does not fit this buffer: " + "; ".join(differs))
        labels = np.asarray(state["labels"], dtype=np.int64)
        if labels.shape != self._storage.labels.shape:
            raise ValueError("state arrays do not match the buffer's shapes")
        counters = [np.asarray(state[k], dtype=np.int64).reshape(-1) for k in STATE_COUNTERS]
        self._policy.restore(labels, *counters)  # checks them first; raises ValueError
        self._storage.load(state["samples"], labels, state["extras"])
        self._policy.rng.bit_generator.state = state["insertion_generator"]
        self._draw_rng.bit_generator.state = state["draw_generator"]
        self._pending = None

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the buffer (idempotent). Collective for the global buffer, as for the
        native one: every rank calls it."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        self._release()
        self._storage = None

    def _release(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GlobalSliceBuffer(SliceBuffer):
    """What a global draw does whatever carries it (python_global.py over mpi4py,
    torch_global.py over torch.distributed): the table of every rank's fill counts, the choice of
    slots (sampler.py), the labels of a fixed slice (a slot's class), and grow-only send buffers.
    A transport gathers the fill counts into ``_all_filled`` (``_gather_fill``) and moves the
    requested rows."""

    COUNT_DTYPE = np.int64  # of the per-rank request counts the transport exchanges

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        P, K = self._world_size, len(self._policy.blocks())
        self._all_filled = np.zeros((P, K), dtype=np.int64)
        self._counts = np.zeros(P, dtype=self.COUNT_DTYPE)
        self._wanted = np.zeros(P, dtype=self.COUNT_DTYPE)
        self._send_x = np.empty((0, *self.sample_shape), dtype=self._dtype)
        self._send_e = np.empty((0, self.num_extras), dtype=np.float32)

    def _gather_fill(self) -> None:
        """Collective: every rank's ``self._policy.blocks()`` into the rows of ``_all_filled``."""
        raise NotImplementedError

    def _choose(self, r, out_y, out_where):
        """Collective: (owner, slot) of this rank's n = min(r, global filled) representatives,
        grouped by owner; fills out_where, for a fixed slice out_y, and ``_counts`` (how many
        rows each rank is asked for). The same total on every rank, so all skip the exchange
        together when the buffer is empty."""
        self._gather_fill()
        per_rank = self._all_filled.sum(axis=1)
        self._counters["filled_per_rank"] = per_rank.tolist()
        self._counters["global_filled"] = int(per_rank.sum())
        owner, slots = draw_slots(self._all_filled, self._policy.stride, r, self._draw_rng)
        n = len(slots)
        if out_where is not None:
            out_where[:n, 0] = owner
            out_where[:n, 1] = slots
        if self.policy == "fixed":
            np.floor_divide(slots, self.slots_per_class, out=out_y[:n], casting="unsafe")
        self._counts[:] = np.bincount(owner, minlength=self._world_size)
        return owner, slots

    def _send_buffers(self, rows):
        """Grow-only send buffers: reused across draws."""
        if self._send_x.shape[0] < rows:
            self._send_x = np.empty((rows, *self.sample_shape), dtype=self._dtype)
            if self.num_extras:
                self._send_e = np.empty((rows, self.num_extras), dtype=np.float32)
        return self._send_x, self._send_e
