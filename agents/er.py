"""`er`: experience replay over a (globally sampled) rehearsal buffer, and the users' names for it.

Each step: draw R representatives (prefetched during the previous step), mix them with the B
new samples, learn from the B+R, and insert the new samples into the buffer (class-balanced
reservoir sampling), which starts the next draw. The memory plumbing (sizing, buffer, the B+R
minibatch, checkpoints) is agents/memory.py's RehearsalMemory.

Aliases (same algorithm, same accuracy within noise; only speed differs):
  nil          buffer 'python': global sampling with mpi4py collectives
  nil_local    buffer 'local': each rank samples its own slice only
  nil_cpp      buffer 'native': global sampling with MPI one-sided reads, into a preallocated B+R batch
  nil_cpp_cat  buffer 'native', mix 'concat': R representatives concatenated to the batch
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agents import memory
from agents.agent import Agent, StepResult
from agents.option_ranges import COUNT, PERCENTAGE
from agents.registry import register


@register("er")
class ERAgent(Agent):
    defaults = dict(memory.OPTIONS)
    choices = dict(memory.CHOICES)
    # buffer_size, slots_per_class, num_candidates: None derives them (num_candidates is also at
    # most the batch size, checked when the memory is built: the batch size is main.py's)
    ranges = {"rehearsal_ratio": PERCENTAGE, "buffer_size": COUNT, "slots_per_class": COUNT,
              "num_candidates": COUNT, "num_representatives": COUNT}
    run_defaults = {"lr": 0.125, "momentum": 0.0}  # scripts/hpo_spaces/nil_cpp.yaml: 92.4% vs 90.7% at 0.02/0.9
    num_extras = 0        # floats stored with each sample (DER stores logits)
    track_where = False   # draws say which rank and slot each representative came from

    @classmethod
    def check_launch(cls, options: dict, engine) -> None:
        if options["buffer"] is not None:
            memory.check_launch(options, engine)

    def before_training(self) -> None:
        if self.options["buffer"] is None:  # si without a buffer: new samples only
            self.memory = memory.NoMemory(self.ctx)
        else:
            self.memory = memory.RehearsalMemory(self.options, self.ctx, self.num_extras, self.track_where)

    def before_task(self, task, resumed: bool = False) -> None:
        if not resumed:
            self.memory.begin_task()

    def before_epoch(self, task, epoch: int) -> None:
        self.memory.begin_epoch(epoch)

    def after_task(self, task) -> None:
        if self.options["offer"] == "task_end":
            self.memory.offer_task(self.ctx.task_batches(task), self.task_end_extras)

    def task_end_extras(self, x):
        """Extras stored with a sample offered at the end of its task (None: none)."""
        return None

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        wait_s, batch = self.memory.next_batch(x, y)        # draw (prefetched) and mix
        with self.autocast():
            inputs = self.ctx.preprocess(batch.x)
            logits = self.forward(inputs)
            self.replayed(logits, batch)
            wait_s += self.memory.insert(x, y, self.extras_of(logits[: batch.b]))  # insert; next draw starts
            loss, terms = self.loss(logits, batch, inputs)
        self.optimize(loss)                                 # learn
        return StepResult(loss=loss.item(), samples=len(batch.y), wait_s=wait_s, losses=terms)

    def forward(self, inputs):
        """The model's logits on the preprocessed B+R minibatch (POD also records its features here)."""
        return self.ctx.model(inputs)

    def extras_of(self, new_logits):
        """What the buffer stores beside each new sample (None: nothing)."""
        return None

    def loss(self, logits, batch, inputs):
        """Cross-entropy on the whole augmented minibatch (new samples and representatives);
        `inputs` is the minibatch as the model saw it (preprocessed), for terms that need it."""
        return F.cross_entropy(logits, batch.y), {}

    def replayed(self, logits, batch) -> None:
        """After the forward pass, before the new samples are inserted (DER's EMA of stored
        logits hooks here, while every drawn slot still holds what was drawn from it)."""

    def stats(self) -> dict:
        return self.memory.stats()

    def state_dict(self) -> dict:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state)

    @staticmethod
    def replicated(state: dict) -> dict:
        """The part of this agent's checkpoint state that every rank holds alike (model copies,
        importances): from a state re-sharded for another world size, any old rank's."""
        return state["reshard"][0] if "reshard" in state else state

    @property
    def reshard_summary(self):
        return getattr(self.memory, "reshard_summary", None)

    def close(self) -> None:
        if getattr(self, "memory", None) is not None:
            self.memory.close()
            self.memory = None


register("nil", buffer="python")(ERAgent)
register("nil_local", buffer="local")(ERAgent)
register("nil_cpp", buffer="native")(ERAgent)
register("nil_cpp_cat", buffer="native", mix="concat")(ERAgent)
