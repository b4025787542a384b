"""`er`: experience replay over a (globally sampled) rehearsal buffer, and the users' names for it.

Each step: take B new samples, mix in R representatives drawn from the buffer, train on
the B+R, and insert the new samples into the buffer (class-balanced reservoir sampling).
The draw for the next step is started as soon as this step's samples are in, and overlaps
this step's backward pass and optimizer step.

Aliases (same algorithm, same accuracy within noise; only speed differs):
  nil          Python global sampling (mpi4py collectives)
  nil_local    each rank samples its own slice only
  nil_cpp      native global sampling, into a preallocated B+R minibatch
  nil_cpp_cat  native global sampling, R representatives concatenated to the batch
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agents.agent import Agent, StepResult
from agents.registry import register
from agents.replay_batches import ReplayBatches
from buffers import make_buffer
from buffers.reshard import reshard
from trainer.errors import UserError

BUFFERS = ("native", "native_cat", "python", "local")


@register("er")
class ERAgent(Agent):
    defaults = {
        "policy": "adaptive",        # 'adaptive': M slots shared by the classes seen; 'fixed': K x slots_per_class
        "rehearsal_ratio": 10.0,     # buffer size, % of the training set, split over ranks (and classes if fixed)
        "buffer_size": None,         # adaptive: or an explicit number of slots per rank
        "slots_per_class": None,     # fixed: or an explicit number of slots per class and rank
        "num_candidates": None,      # new samples offered to the buffer per step, at random among B (default: all)
        "num_representatives": 32,   # R, representatives mixed into every minibatch
        "buffer": "native",
        "global_sampling": True,     # False: each rank draws from its own slice (= buffer 'local')
        "async": True,               # prefetch the next draw during the current step
    }
    choices = {"buffer": BUFFERS, "global_sampling": (True, False), "async": (True, False),
               "policy": ("adaptive", "fixed")}
    run_defaults = {"lr": 0.125, "momentum": 0.0}  # scripts/hpo_spaces/nil_cpp.yaml: 92.4% vs 90.7% at 0.02/0.9
    num_extras = 0  # floats stored with each sample (DER stores logits)

    @staticmethod
    def buffer_kind(options: dict) -> str:
        if not options["global_sampling"]:
            return "local"
        return "native" if options["buffer"] == "native_cat" else options["buffer"]

    @classmethod
    def check_launch(cls, options: dict, engine) -> None:
        if options["num_representatives"] < 1:
            raise UserError(f"--agent-config num_representatives must be at least 1, "
                            f"got {options['num_representatives']}")
        if engine.mpi_comm is None and cls.buffer_kind(options) != "local":
            raise UserError(f"global sampling needs the ranks connected by MPI, and this job was launched by "
                            f"{engine.launch.launcher}; launch with mpirun/srun/horovodrun, or use "
                            f"--agent-config \"{{'buffer': 'local'}}\"")

    def before_training(self) -> None:
        o, ctx = self.options, self.ctx
        self.check_launch(o, ctx.engine)
        kind = self.buffer_kind(o)
        comm = ctx.engine.mpi_comm
        if comm is None:
            from mpi4py import MPI  # a rank-local buffer needs no peers

            comm = MPI.COMM_SELF
        self.candidates = self.num_candidates()
        if o["policy"] == "fixed":
            if o["buffer_size"] is not None:
                raise UserError("--agent-config buffer_size is for policy 'adaptive'; "
                                "policy 'fixed' takes slots_per_class")
            self.slots = self.slots_per_class()
            layout = dict(slots_per_class=self.slots, policy="fixed")
        else:
            if o["slots_per_class"] is not None:
                raise UserError("--agent-config slots_per_class is for policy 'fixed'; "
                                "policy 'adaptive' takes buffer_size (slots per rank)")
            self.slots = None
            layout = dict(capacity=self.buffer_size(), policy="adaptive")
        self.check_memory(layout)
        seed = ctx.seed * 1_000_003 + (ctx.engine.rank if comm.Get_size() == 1 else 0)
        # Which of the B new samples are offered (num_candidates): its own stream, per rank.
        self.candidate_generator = torch.Generator().manual_seed(seed * 31 + 7 + ctx.engine.rank)
        self.buffer = make_buffer(kind, num_classes=ctx.num_classes, sample_shape=ctx.sample_shape,
                                  dtype="uint8", num_extras=self.num_extras, seed=seed, comm=comm, **layout)
        self.batches = ReplayBatches(self.buffer, ctx.batch_size, o["num_representatives"], ctx.sample_shape,
                                     self.num_extras, ctx.device, prefetch=o["async"] and kind == "native",
                                     cat=o["buffer"] != "native")

    def check_memory(self, layout: dict) -> None:
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

    def num_candidates(self) -> int | None:
        c, batch = self.options["num_candidates"], self.ctx.batch_size
        if c is None:
            return None
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= batch:
            raise UserError(f"--agent-config num_candidates must be an integer in [1, batch_size={batch}], got {c!r}")
        return c

    def buffer_size(self) -> int:
        """Slots per rank of the adaptive buffer: buffer_size, or rehearsal_ratio % of the
        training set split over the ranks."""
        o, ctx = self.options, self.ctx
        size = o["buffer_size"]
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise UserError(f"--agent-config buffer_size must be an integer >= 1 (slots per rank), got {size!r}")
            return size
        if not 0 < o["rehearsal_ratio"] <= 100:
            raise UserError(f"--agent-config rehearsal_ratio is a percentage in (0, 100], got {o['rehearsal_ratio']}")
        return max(1, math.floor(ctx.train_size * o["rehearsal_ratio"] / 100.0 / ctx.engine.world_size))

    def slots_per_class(self) -> int:
        o, ctx = self.options, self.ctx
        if o["slots_per_class"] is not None:
            if o["slots_per_class"] < 1:
                raise UserError(f"--agent-config slots_per_class must be at least 1, got {o['slots_per_class']}")
            return int(o["slots_per_class"])
        if not 0 < o["rehearsal_ratio"] <= 100:
            raise UserError(f"--agent-config rehearsal_ratio is a percentage in (0, 100], got {o['rehearsal_ratio']}")
        total = ctx.train_size * o["rehearsal_ratio"] / 100.0
        return max(1, math.floor(total / (ctx.engine.world_size * ctx.num_classes)))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        ctx = self.ctx
        wait_s = self.batches.collect()
        xs, ys, reps_extras, n = self.batches.batch(x, y)
        with self.autocast():
            logits = ctx.model(ctx.preprocess(xs))
            wait_s += self.insert(x, y, logits[: len(y)])
            loss, terms = self.loss(logits, ys, len(y), n, reps_extras)
        self.optimize(loss)
        return StepResult(loss=loss.item(), samples=len(ys), wait_s=wait_s, losses=terms)

    def insert(self, x, y, new_logits) -> float:
        """Insert the new samples, then start the next draw; returns the seconds it blocked."""
        extras = self.extras_of(new_logits)
        if self.candidates is not None and self.candidates < len(y):
            pick = torch.randperm(len(y), generator=self.candidate_generator)[: self.candidates].sort().values
            x, y = x[pick], y[pick]
            extras = extras[pick] if extras is not None else None
        self.buffer.add(x, y, extras)
        return self.batches.launch()

    def extras_of(self, new_logits):
        return None

    def loss(self, logits, ys, b: int, n: int, reps_extras):
        """Cross-entropy on the whole augmented minibatch (new samples and representatives)."""
        loss = F.cross_entropy(logits, ys)
        return loss, {}

    def stats(self) -> dict:
        """This rank's buffer counters plus every rank's fill per class (summed over ranks) and
        the fill of the whole buffer (slots used / capacity), so empty memory shows."""
        s = self.buffer.stats()
        engine = self.ctx.engine
        per_rank = torch.zeros(engine.world_size, self.ctx.num_classes + 1, dtype=torch.float64)
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
                "candidates": self.candidate_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "reshard" in state:  # written by another number of ranks: pool and re-shard the slices
            self.load_resharded([old["buffer"] for old in state["reshard"]])
            return
        try:
            self.buffer.load_state(state["buffer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"the checkpoint's buffer state is damaged or does not fit this buffer: "
                            f"{str(exc).strip(chr(39))}") from exc
        self.batches.load_state_dict(state["pending"])
        if "candidates" in state:
            self.candidate_generator.set_state(state["candidates"])

    def load_resharded(self, slices: list) -> None:
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
        if getattr(self, "buffer", None) is not None:
            self.batches.close()
            self.buffer.close()
            self.buffer = None


register("nil", buffer="python", global_sampling=True)(ERAgent)
register("nil_local", buffer="local", global_sampling=False)(ERAgent)
register("nil_cpp", buffer="native", global_sampling=True)(ERAgent)
register("nil_cpp_cat", buffer="native_cat", global_sampling=True)(ERAgent)


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
