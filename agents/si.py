"""`si`: Synaptic Intelligence (Zenke et al., ICML 2017): each weight's importance to the tasks so
far, from the path integral of the loss along training, and a quadratic penalty toward the
weights at the end of the previous task, alpha x sum(importance x (weight - previous)^2).

During a task, every step adds -g x dw to each weight's running integral, where dw is the step's
change of the weight and g the gradient of the task loss (the step's averaged gradient minus the
penalty's own gradient, computed exactly). At the end of a task the importance grows by
max(integral, 0) / (total change^2 + xi); the clamp keeps it non-negative where momentum carried
a weight briefly uphill. With data parallelism the gradient is the one averaged over ranks and
every rank takes the same step, so every rank accumulates the same importances without any
communication of its own.

It needs no buffer (the default, `buffer: None`), but composes with one: with `buffer` set it is
experience replay plus the penalty. `alpha` and `xi` are Synapse's names (Zenke's c and xi);
xi defaults to 1.0, not Synapse's 0.01: with 0.01 the importances (integral / (change^2 + xi)) grow so
large on the default experiment that the penalty's stiffness makes SGD diverge in the second task.
"""
from __future__ import annotations

import torch

from agents import memory
from agents.er import ERAgent
from agents.option_ranges import LOSS_WEIGHT, POSITIVE
from agents.registry import register


@register("si")
class SIAgent(ERAgent):
    defaults = {**ERAgent.defaults, "buffer": None, "alpha": 0.5, "xi": 1.0}
    choices = {**ERAgent.choices, "buffer": (None, *memory.BUFFERS)}
    ranges = {**ERAgent.ranges, "alpha": LOSS_WEIGHT, "xi": POSITIVE}  # xi divides (change^2 + xi)

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.params = dict(self.ctx.module.named_parameters())
        zeros = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in self.params.items()}
        self.integral = {name: t.clone() for name, t in zeros.items()}    # this task's path integral
        self.importance = {name: t.clone() for name, t in zeros.items()}  # Omega, over the tasks so far
        self.anchor = self._weights()                                      # weights at the last task end

    def _weights(self) -> dict:
        return {name: p.detach().float().clone() for name, p in self.params.items()}

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.ctx.device)
        for name, p in self.params.items():
            total = total + (self.importance[name] * (p.float() - self.anchor[name]).pow(2)).sum()
        return self.options["alpha"] * total

    def loss(self, logits, batch, inputs):
        loss, terms = super().loss(logits, batch, inputs)
        penalty = self.penalty()
        terms["si_penalty"] = penalty.item()
        return loss + penalty, terms

    def optimize(self, loss) -> None:
        before = self._weights()
        super().optimize(loss)
        alpha = self.options["alpha"]
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is None:
                    continue
                step = p.detach().float() - before[name]
                # the task loss's gradient: the averaged one less the penalty's (2 alpha Omega (w - anchor))
                grad = p.grad.float() - 2.0 * alpha * self.importance[name] * (before[name] - self.anchor[name])
                self.integral[name] -= torch.where(step != 0, grad * step, torch.zeros_like(step))

    def after_task(self, task) -> None:
        super().after_task(task)
        now = self._weights()
        for name in self.params:
            change = now[name] - self.anchor[name]
            self.importance[name] += self.integral[name].clamp(min=0) / (change.pow(2) + self.options["xi"])
            self.integral[name].zero_()
        self.anchor = now

    def state_dict(self) -> dict:
        return {**super().state_dict(), "si": {"integral": self.integral, "importance": self.importance,
                                               "anchor": self.anchor}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        own = self.replicated(state)["si"]
        for key in ("integral", "importance", "anchor"):
            for name, tensor in own[key].items():
                getattr(self, key)[name].copy_(tensor)
