"""The agent interface: what the task loop calls, and what a rehearsal strategy overrides.

An agent is the algorithm (how one minibatch is learned from); the task loop
(trainer/loop.py) is the orchestration (tasks, epochs, evaluation, checkpoints).
Lifecycle hooks are no-ops that an agent overrides only when it needs them.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from agents.option_ranges import checked_value
from common.errors import UserError


@dataclass
class AgentContext:
    """Everything an agent may use; built by the task loop."""
    model: torch.nn.Module          # the module to train through (may be a DDP wrapper)
    module: torch.nn.Module         # the bare model (for logits without DDP hooks)
    engine: Any                     # trainer.engine.Engine
    device: torch.device
    preprocess: Callable            # uint8 batch on device -> (augmented,) normalised float batch
    num_classes: int
    sample_shape: tuple
    train_size: int                 # training samples over all tasks (all ranks)
    batch_size: int                 # B, new samples per step and rank
    seed: int
    reset_model: Callable[[int], None]  # re-initialise the model's weights for a task
    optimizer: Any = None           # set by the loop before each task
    class_counts: Any = None        # samples per class in the training set (all ranks)
    precision: Any = None           # trainer.precision.Precision (--amp); None: plain fp32
    eval_preprocess: Any = None     # preprocess without augmentation (None: preprocess)
    task_batches: Any = None        # task -> this rank's (x, y) batches of it, once (the task loop's data)


@dataclass
class StepResult:
    loss: float
    samples: int                    # samples trained on (new + representatives)
    wait_s: float = 0.0             # time spent waiting for representatives
    losses: dict = field(default_factory=dict)  # named loss terms, for logging


class Agent:
    """Plain incremental fine-tuning; the base every rehearsal agent extends."""

    name = "agent"
    defaults: dict = {}
    choices: dict = {}  # option -> allowed values, for options with a closed set
    ranges: dict = {}   # option -> its option_ranges.Range, for every other option (the registry checks)
    # main.py options this agent was tuned with (scripts/hpo.py on the default experiment, see
    # README, Benchmarks), used where the preset and the command line leave them unset.
    run_defaults: dict = {}
    evaluated_with = "trained model"  # what eval_module() is, as metrics.json reports it


    def __init__(self, ctx: AgentContext, options: dict | None = None):
        self.ctx = ctx
        self.options = self.check_options(options or {})

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """`options` merged over the defaults, each checked: a known key, one of its `choices`, of
        its default's type, in its `ranges` (agents/option_ranges.py). Raises UserError naming the
        first bad option as `--agent`'s NAME (an alias's class carries the alias's name)."""
        unknown = [k for k in options if k not in cls.defaults]
        if unknown:
            close = difflib.get_close_matches(unknown[0], cls.defaults, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(sorted(cls.defaults)) or "(none)"
            raise UserError(f"unknown --agent-config key {unknown[0]!r} for agent {cls.name}{hint}; "
                            f"valid keys: {valid}")
        merged = {**cls.defaults, **options}
        for key, allowed in cls.choices.items():
            # by type too: 1 == True, but {'normalize': 1} is not the flag True
            if not any(merged[key] == a and type(merged[key]) is type(a) for a in allowed):
                raise UserError(f"--agent-config {key}={merged[key]!r} for agent {cls.name}; "
                                f"valid values: {', '.join(map(repr, allowed))}")
        for key, kind in cls.ranges.items():
            merged[key] = checked_value(cls.name, key, merged[key], cls.defaults[key], kind)
        return merged

    @classmethod
    def check_launch(cls, options: dict, engine) -> None:
        """Refuse, before anything is written, a job this agent cannot run in."""

    # Lifecycle hooks, called by the task loop.
    def before_training(self) -> None:
        """Once, before the first task (buffers are sized and created here)."""

    def before_task(self, task, resumed: bool = False) -> None:
        """Before each task's first epoch (or, resumed=True, before it resumes mid-task)."""

    def before_epoch(self, task, epoch: int) -> None:
        """At the start of each epoch of a task (also the epoch a resumed run continues in)."""

    def after_task(self, task) -> None:
        """After each task's last epoch, before evaluation."""

    def close(self) -> None:
        """Release what the agent holds (buffers, windows), on every rank."""

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Learn from one minibatch of new samples (uint8 x and int64 y, in host memory)."""
        x, y = self.to_device(x), self.to_device(y)
        with self.autocast():
            loss = F.cross_entropy(self.ctx.model(self.ctx.preprocess(x)), y)
        self.optimize(loss)
        return StepResult(loss=loss.item(), samples=len(y))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.ctx.device, non_blocking=self.ctx.device.type == "cuda")

    def autocast(self):
        """Mixed precision (--amp) for the forward pass and the losses; the backward runs outside."""
        return self.ctx.precision.autocast() if self.ctx.precision is not None else contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor) -> None:
        optimizer = self.ctx.optimizer
        optimizer.zero_grad()
        if self.ctx.precision is not None:
            self.ctx.precision.backward_step(loss, optimizer)  # through the GradScaler in fp16
        else:
            loss.backward()
            optimizer.step()

    def eval_module(self) -> torch.nn.Module:
        """The model the run is evaluated with (CLS-ER: its stable copy)."""
        return self.ctx.module

    def stats(self) -> dict:
        """Numbers the run reports after each task (e.g. buffer fill)."""
        return {}

    def state_dict(self) -> dict:
        """What a checkpoint must hold to resume this agent exactly (beyond the model)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
