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
from trainer.errors import UserError

BUFFERS = ("native", "native_cat", "python", "local")


@register("er")
class ERAgent(Agent):
    defaults = {
        "rehearsal_ratio": 10.0,     # buffer size, % of the training set, split over classes and ranks
        "slots_per_class": None,     # or an explicit number of slots per class and rank
        "num_representatives": 32,   # R, representatives mixed into every minibatch
        "buffer": "native",
        "global_sampling": True,     # False: each rank draws from its own slice (= buffer 'local')
        "async": True,               # prefetch the next draw during the current step
    }
    choices = {"buffer": BUFFERS, "global_sampling": (True, False), "async": (True, False)}
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
        self.slots = self.slots_per_class()
        seed = ctx.seed * 1_000_003 + (ctx.engine.rank if comm.Get_size() == 1 else 0)
        self.buffer = make_buffer(kind, num_classes=ctx.num_classes, slots_per_class=self.slots,
                                  sample_shape=ctx.sample_shape, dtype="uint8",
                                  num_extras=self.num_extras, seed=seed, comm=comm)
        self.batches = ReplayBatches(self.buffer, ctx.batch_size, o["num_representatives"], ctx.sample_shape,
                                     self.num_extras, ctx.device, prefetch=o["async"] and kind == "native",
                                     cat=o["buffer"] != "native")

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
        logits = ctx.model(ctx.preprocess(xs))
        wait_s += self.insert(x, y, logits[: len(y)])
        loss, terms = self.loss(logits, ys, len(y), n, reps_extras)
        self.optimize(loss)
        return StepResult(loss=loss.item(), samples=len(ys), wait_s=wait_s, losses=terms)

    def insert(self, x, y, new_logits) -> float:
        """Insert the new samples, then start the next draw; returns the seconds it blocked."""
        extras = self.extras_of(new_logits)
        self.buffer.add(x, y, extras)
        return self.batches.launch()

    def extras_of(self, new_logits):
        return None

    def loss(self, logits, ys, b: int, n: int, reps_extras):
        """Cross-entropy on the whole augmented minibatch (new samples and representatives)."""
        loss = F.cross_entropy(logits, ys)
        return loss, {}

    def stats(self) -> dict:
        """This rank's buffer counters plus every rank's fill per class (summed over ranks)."""
        s = self.buffer.stats()
        engine = self.ctx.engine
        per_rank = torch.zeros(engine.world_size, self.ctx.num_classes, dtype=torch.float64)
        per_rank[engine.rank] = torch.tensor(s["filled_per_class"], dtype=torch.float64)
        engine.allreduce_sum(per_rank)
        return {"slots_per_class": self.slots, "filled": s["filled"],
                "filled_per_rank": per_rank.sum(dim=1).long().tolist(),
                "filled_per_class_per_rank": per_rank.long().tolist(),
                "global_filled": int(per_rank.sum().item()),
                "last_draw_seconds": s["last_draw_seconds"], "draws": s["draws"],
                "bytes_read_remote": s["bytes_read_remote"]}

    def state_dict(self) -> dict:
        pending = self.batches.state_dict()  # first: finishes the draw in flight
        return {"buffer": self.buffer.state(), "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state(state["buffer"])
        self.batches.load_state_dict(state["pending"])

    def close(self) -> None:
        if getattr(self, "buffer", None) is not None:
            self.batches.close()
            self.buffer.close()
            self.buffer = None


register("nil", buffer="python", global_sampling=True)(ERAgent)
register("nil_local", buffer="local", global_sampling=False)(ERAgent)
register("nil_cpp", buffer="native", global_sampling=True)(ERAgent)
register("nil_cpp_cat", buffer="native_cat", global_sampling=True)(ERAgent)
