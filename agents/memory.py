"""RehearsalMemory: the rehearsal buffer an agent learns from, and the B+R minibatches drawn
from it, as one component an agent receives (the agent says what to learn, the memory owns
the memory plumbing).

It sizes the buffer from the options (a share of the training set, or explicit slots), refuses
one the node cannot hold, builds it on every rank (under torchrun, with no MPI peers, a global
buffer's draws go over torch.distributed: buffers/torch_global.py), offers the new samples to
it, prefetches the next draw while a step trains (ReplayBatches), and keeps what a checkpoint
needs. For stored extras (DER's logits) it also knows which local slots took a sample this
task and can rewrite extras anywhere in the global buffer (each row is sent to the rank that
owns it).

Three independent choices, all options of every rehearsal agent:
  buffer  'native' (C++, MPI one-sided reads) | 'python' (mpi4py collectives) | 'local' (own slice);
          under torchrun 'native' and 'python' draw over torch.distributed (buffer kind 'torch')
  mix     'in_place' (representatives drawn into the tail of a preallocated B+R batch) | 'concat'
  async   prefetch the next draw during the current step (native buffer)
plus what is offered ('offer': every epoch, or only a task's first epoch so that the reservoir is
over distinct samples).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from agents.replay_batches import Minibatch, ReplayBatches
from buffers import make_buffer
from buffers.reshard import reshard
from common.errors import UserError
from common.seeding import stream_seed

log = logging.getLogger(__name__)
# Buffer state kinds that load into a buffer of the key's kind as they are (one layout, one meaning).
SAME_LAYOUT = {"buffers.TorchGlobalBuffer/1": ("buffers.PythonGlobalBuffer/1",)}

BUFFERS = ("native", "native_cat", "python", "local")  # native_cat: native with mix 'concat' (nil_cpp_cat)
OPTIONS = {
    "policy": "adaptive",        # 'adaptive': M slots shared by the classes seen; 'fixed': K x slots_per_class
    "rehearsal_ratio": 10.0,     # buffer size, % of the training set, split over ranks (and classes if fixed)
    "buffer_size": None,         # adaptive: or an explicit number of slots per rank
    "slots_per_class": None,     # fixed: or an explicit number of slots per class and rank
    "num_candidates": None,      # new samples offered to the buffer per step, at random among B (default: all)
    "num_representatives": 32,   # R, representatives mixed into every minibatch
    "offer": "every_epoch",      # or 'first_epoch' / 'task_end': each sample offered once per task
    "buffer": "native",
    "mix": "in_place",
    "async": True,               # prefetch the next draw during the current step
}
CHOICES = {"buffer": BUFFERS, "mix": ("in_place", "concat"), "async": (True, False),
           "policy": ("adaptive", "fixed"), "offer": ("every_epoch", "first_epoch", "task_end")}


def buffer_kind(options: dict, engine=None) -> str:
    """The buffer kind the options ask for; given the engine, the one this launch can build:
    a global buffer on ranks without MPI between them but in one torch.distributed job
    (torchrun) is 'torch' (the 'python' draws over gloo), since MPI cannot connect them."""
    kind = "native" if options["buffer"] == "native_cat" else options["buffer"]
    if engine is not None and kind != "local" and engine.mpi_comm is None and _torch_job(engine):
        return "torch"
    return kind


def _torch_job(engine) -> bool:
    """Whether torch.distributed's default group spans exactly the engine's ranks."""
    import torch.distributed as dist

    return (engine.world_size > 1 and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() == engine.world_size)


def check_launch(options: dict, engine) -> None:
    if options["num_representatives"] < 1:
        raise UserError(f"--agent-config num_representatives must be at least 1, got {options['num_representatives']}")
    if engine.mpi_comm is None and engine.world_size > 1 and buffer_kind(options, engine) not in ("local", "torch"):
        raise UserError(f"global sampling needs the ranks connected by MPI or by torch.distributed, and this job "
                        f"was launched by {engine.launch.launcher} with neither; launch with mpirun/srun/horovodrun "
                        f"or torchrun (--backend torch), or use --agent-config \"{{'buffer': 'local'}}\"")


class RehearsalMemory:
    def __init__(self, options: dict, ctx, num_extras: int = 0, track_where: bool = False):
        """Collective: every rank builds its slice. `ctx` is the agent's AgentContext;
        track_where: draws also say which rank and slot each representative came from."""
        check_launch(options, ctx.engine)
        self.options, self.ctx, self.num_extras = options, ctx, num_extras
        self.kind = kind = buffer_kind(options, ctx.engine)
        comm = ctx.engine.mpi_comm
        # Logged at the first epoch: the run's log files do not exist yet while the agent is built.
        self.transport_note = None
        if kind == "torch":
            self.transport_note = (f"global rehearsal without MPI between the ranks ({ctx.engine.launch.launcher}): "
                                   f"the representatives travel over torch.distributed (gloo collectives) "
                                   f"instead of MPI one-sided reads")
        elif comm is None:
            from mpi4py import MPI  # a rank-local buffer (or a one-rank global one) needs no peers

            comm = MPI.COMM_SELF
        self.comm = comm
        self.candidates = self._num_candidates()
        layout = self._layout()
        self.slots = layout.get("slots_per_class")
        self._check_memory(layout)
        shared = kind == "torch" or comm.Get_size() > 1
        seed = stream_seed(ctx.seed, 0 if shared else ctx.engine.rank)  # rank-local: own stream
        # Which of the B new samples are offered (num_candidates): its own stream, per rank.
        self.candidate_generator = torch.Generator().manual_seed(seed * 31 + 7 + ctx.engine.rank)
        self.buffer = make_buffer(kind, num_classes=ctx.num_classes, sample_shape=ctx.sample_shape, dtype="uint8",
                                  num_extras=num_extras, seed=seed, comm=comm, **layout)
        if kind == "torch":
            self.comm = self.buffer.comm  # allgather/Get_rank/Get_size over the buffer's gloo group
        concat = options["mix"] == "concat" or options["buffer"] == "native_cat"
        self.batches = ReplayBatches(self.buffer, ctx.batch_size, options["num_representatives"], ctx.sample_shape,
                                     num_extras, ctx.device, prefetch=options["async"] and kind == "native",
                                     cat=concat, track_where=track_where)
        self.offering = True
        self.taken = np.zeros(0, np.int64)  # local slots that took a sample this task

    # ----------------------------------------------------------------- sizing
    def _layout(self) -> dict:
        o, ctx = self.options, self.ctx
        if o["policy"] == "fixed":
            if o["buffer_size"] is not None:
                raise UserError("--agent-config buffer_size is for policy 'adaptive'; "
                                "policy 'fixed' takes slots_per_class")
            return dict(slots_per_class=self._slots_per_class(), policy="fixed")
        if o["slots_per_class"] is not None:
            raise UserError("--agent-config slots_per_class is for policy 'fixed'; "
                            "policy 'adaptive' takes buffer_size (slots per rank)")
        size = o["buffer_size"]
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise UserError(f"--agent-config buffer_size must be an integer >= 1 (slots per rank), got {size!r}")
            return dict(capacity=size, policy="adaptive")
        total = self._share_of_training_set()
        return dict(capacity=max(1, math.floor(total / ctx.engine.world_size)), policy="adaptive")

    def _slots_per_class(self) -> int:
        o, ctx = self.options, self.ctx
        if o["slots_per_class"] is not None:
            if o["slots_per_class"] < 1:
                raise UserError(f"--agent-config slots_per_class must be at least 1, got {o['slots_per_class']}")
            return int(o["slots_per_class"])
        total = self._share_of_training_set()
        return max(1, math.floor(total / (ctx.engine.world_size * ctx.num_classes)))

    def _share_of_training_set(self) -> float:
        ratio = self.options["rehearsal_ratio"]
        if not 0 < ratio <= 100:
            raise UserError(f"--agent-config rehearsal_ratio is a percentage in (0, 100], got {ratio}")
        return self.ctx.train_size * ratio / 100.0

    def _num_candidates(self) -> int | None:
        c, batch = self.options["num_candidates"], self.ctx.batch_size
        if c is None:
            return None
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= batch:
            raise UserError(f"--agent-config num_candidates must be an integer in [1, batch_size={batch}], got {c!r}")
        return c

    def _check_memory(self, layout: dict) -> None:
        """Refuse a buffer this node cannot hold, saying what it would need, rather than failing
        inside MPI_Win_allocate or being killed by the kernel mid-run."""
        ctx = self.ctx
        slots = layout.get("capacity") or ctx.num_classes * layout["slots_per_class"]
        per_slot = math.prod(ctx.sample_shape) + 4 * self.num_extras + 8  # uint8 sample, float32 extras, label
        need = slots * per_slot * ctx.engine.launch.local_size
        available = _available_memory()
        if available is not None and need > available:
            raise UserError(f"the rehearsal buffer needs {need / 2**30:.2f} GiB on this node ({slots} slots of "
                            f"{per_slot} bytes per rank x {ctx.engine.launch.local_size} rank(s)) but only "
                            f"{available / 2**30:.2f} GiB is available; lower rehearsal_ratio, buffer_size "
                            f"or slots_per_class, or use more nodes")

    # ----------------------------------------------------------------- each step
    def begin_task(self) -> None:
        self.taken = np.zeros(0, np.int64)

    def begin_epoch(self, epoch: int) -> None:
        if self.transport_note:
            log.info("%s", self.transport_note)
            self.transport_note = None
        offer = self.options["offer"]
        self.offering = offer == "every_epoch" or (offer == "first_epoch" and epoch == 0)

    def next_batch(self, x: torch.Tensor, y: torch.Tensor):
        """(seconds waited for the draw, Minibatch): this step's new samples and representatives."""
        wait_s = self.batches.collect()
        return wait_s, self.batches.batch(x, y)

    def insert(self, x: torch.Tensor, y: torch.Tensor, extras: torch.Tensor | None = None) -> float:
        """Offer the new samples (all, or num_candidates of them at random; none after a task's
        first epoch with offer 'first_epoch', none during a task with 'task_end'), then start the
        next draw; returns the seconds it blocked."""
        if self.offering:
            self._offer(x, y, extras)
        return self.batches.launch()

    def _offer(self, x, y, extras) -> None:
        if self.candidates is not None and self.candidates < len(y):
            pick = torch.randperm(len(y), generator=self.candidate_generator)[: self.candidates].sort().values
            x, y = x[pick], y[pick]
            extras = extras[pick] if extras is not None else None
        slots = self.buffer.add(x, y, extras)
        if self.num_extras:
            self.taken = np.union1d(self.taken, slots[slots >= 0])

    def offer_task(self, batches, extras_of=None) -> None:
        """Collective. offer 'task_end': offer this rank's share of the task once, now (extras from
        `extras_of(x)`, e.g. the trained model's logits), so that during a task the representatives
        all come from earlier tasks. The draw in flight is finished first and redone after, so
        the next step rehearses what was just stored."""
        self.batches.collect()
        for x, y in batches:
            self._offer(x, y, extras_of(x) if extras_of is not None else None)
        self.batches.launch()

    # ----------------------------------------------------------------- stored extras
    def refresh_task_extras(self, extras_of, rows: int = 256) -> None:
        """Collective: rewrite the extras of the local slots that took a sample this task with
        ``extras_of(uint8 samples)`` (DER's logits 'task_end': the model as trained), `rows` at a
        time, then redo the draw in flight, which may hold the old ones."""
        slots = self.taken
        x = torch.empty((len(slots), *self.ctx.sample_shape), dtype=torch.uint8)
        y = torch.empty(len(slots), dtype=torch.int64)
        extras = torch.empty((len(slots), self.num_extras), dtype=torch.float32)
        if len(slots):
            self.buffer.read(slots, x, y, extras)
        for first in range(0, len(slots), rows):
            chunk = slice(first, first + rows)
            self.write_extras(slots[chunk], extras_of(x[chunk]))
        self.batches.collect()
        self.batches.launch()

    def write_extras(self, slots: np.ndarray, extras: torch.Tensor) -> None:
        """Local rows (exclusive: a reader sees each row all old or all new)."""
        if len(slots):
            self.buffer.write_extras(np.ascontiguousarray(slots, dtype=np.int64), extras.contiguous())

    def send_extras(self, where: np.ndarray, extras: torch.Tensor) -> None:
        """Collective: rewrite the extras of drawn representatives wherever they live; `where`
        holds (owner rank, slot) per row. Rows for one slot from several ranks: the highest
        rank's wins. Called between the draw and the next insert(), so every slot still holds
        the sample that was drawn from it, and no draw is in flight."""
        extras = extras.detach().float().cpu().numpy()
        if self.kind == "local" or self.comm.Get_size() == 1:  # every representative is this rank's own
            gathered = [(where, extras)]
        else:
            gathered = self.comm.allgather((where, extras))
        me = self.comm.Get_rank()
        for owners_slots, values in gathered:
            mine = owners_slots[:, 0] == me
            if mine.any():
                self.write_extras(owners_slots[mine, 1], torch.from_numpy(np.ascontiguousarray(values[mine])))

    # ----------------------------------------------------------------- reporting and state
    def stats(self) -> dict:
        """This rank's buffer counters plus every rank's fill per class (summed over ranks) and
        the fill of the whole buffer (slots used / capacity), so empty memory shows."""
        s = self.buffer.stats()
        engine, num_classes = self.ctx.engine, self.ctx.num_classes
        per_rank = torch.zeros(engine.world_size, num_classes + 1, dtype=torch.float64)
        per_rank[engine.rank, torch.tensor(s["classes"], dtype=torch.long)] = \
            torch.tensor(s["filled_per_class"], dtype=torch.float64)
        per_rank[engine.rank, -1] = s["capacity"]
        engine.allreduce_sum(per_rank)
        capacity, per_rank = int(per_rank[:, -1].sum().item()), per_rank[:, :-1]
        return {"policy": self.options["policy"], "slots_per_class": self.slots, "capacity_per_rank": s["capacity"],
                "capacity": capacity, "fill": float(per_rank.sum().item()) / capacity, "filled": s["filled"],
                "filled_per_rank": per_rank.sum(dim=1).long().tolist(),
                "filled_per_class_per_rank": per_rank.long().tolist(),
                "global_filled": int(per_rank.sum().item()),
                "last_draw_seconds": s["last_draw_seconds"], "draws": s["draws"],
                "bytes_read_remote": s["bytes_read_remote"]}

    def state_dict(self) -> dict:
        pending = self.batches.state_dict()  # first: finishes the draw in flight
        return {"buffer": self.buffer.state(), "pending": pending,
                "candidates": self.candidate_generator.get_state(), "taken": self.taken.copy()}

    def load_state_dict(self, state: dict) -> None:
        if "reshard" in state:  # written by another number of ranks: pool and re-shard the slices
            self._load_resharded([old["buffer"] for old in state["reshard"]])
            return
        saved = state.get("buffer") if isinstance(state, dict) else None
        mine = _state_kind(self.buffer) if isinstance(saved, dict) else None
        if mine is not None and saved.get("kind") not in (mine, *SAME_LAYOUT.get(mine, ())):
            self._load_other_kind(saved, mine)
            return
        try:
            self.buffer.load_state(state["buffer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"the checkpoint's buffer state is damaged or does not fit this buffer: "
                            f"{str(exc).strip(chr(39))}") from exc
        self.batches.load_state_dict(state["pending"])
        if "candidates" in state:
            self.candidate_generator.set_state(state["candidates"])
        self.taken = np.asarray(state.get("taken", np.zeros(0, np.int64)), dtype=np.int64)

    def _load_other_kind(self, saved: dict, mine: str) -> None:
        """A slice written by another buffer kind (a torchrun run's 'torch' buffer resumed under
        mpirun's native one, or the reverse): the same slots, labels and counters, moved into this
        kind's layout (buffers/reshard.py, one old rank to this one); the generators start afresh,
        so the run continues correctly but not bit for bit as under the old launcher."""
        try:
            state, _ = reshard([saved], self.buffer.state(), 0, 1, seed=self.ctx.seed)
            self.buffer.load_state(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"the checkpoint's buffer state (kind {saved.get('kind')!r}) does not fit this "
                            f"launch's {mine!r} buffer: {str(exc).strip(chr(39))}; resume it with the launcher "
                            f"and --agent-config buffer it was written with") from exc
        log.warning("the checkpoint's buffer slice was written by a %r buffer and is loaded into this launch's %r "
                    "buffer: same contents, new generator states (the run continues, not bit-identically)",
                    saved.get("kind"), mine)

    def _load_resharded(self, slices: list) -> None:
        """This rank's share of the old ranks' pooled slices (buffers/reshard.py says what is
        kept exactly and what is approximated); the next step starts without representatives."""
        engine = self.ctx.engine
        try:
            state, self.reshard_summary = reshard(slices, self.buffer.state(), engine.rank, engine.world_size,
                                                  seed=self.ctx.seed)
            self.buffer.load_state(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"the checkpoint's buffer state is damaged or does not fit this buffer: "
                            f"{str(exc).strip(chr(39))}") from exc

    def close(self) -> None:
        if self.buffer is not None:
            self.batches.close()
            self.buffer.close()
            self.buffer = None


class NoMemory:
    """What a rehearsal agent has when it is run without a buffer (`si`'s default, buffer None):
    every minibatch is the B new samples alone, and nothing is stored."""

    kind = None

    def __init__(self, ctx):
        self.ctx = ctx

    def next_batch(self, x: torch.Tensor, y: torch.Tensor):
        pin = self.ctx.device.type == "cuda"
        dev = [t.to(self.ctx.device, non_blocking=pin) for t in (x, y)]
        return 0.0, Minibatch(*dev, None, len(y), 0, None)

    def insert(self, x, y, extras=None) -> float:
        return 0.0  # nothing stored, nothing waited for

    def _nothing(self, *args, **kwargs) -> None:
        """Task and epoch boundaries, task-end offers, state to load, closing: nothing to do."""

    begin_task = begin_epoch = offer_task = load_state_dict = close = _nothing

    def stats(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}


def _state_kind(buffer) -> str:
    """The kind a buffer's state() is tagged with, without copying the state."""
    kind = getattr(buffer, "KIND", None)
    if kind is None:  # the native buffer tags its state with its module's STATE_KIND
        from cpp_loader.buffer import STATE_KIND as kind
    return kind


def _available_memory() -> int | None:
    """Bytes of memory the kernel says are available (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
