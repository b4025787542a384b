"""`agem`: Averaged Gradient Episodic Memory (Chaudhry et al., ICLR 2019).

The representatives are not trained on; they give a reference gradient. Each step computes the
gradient g on the B new samples and g_ref on the R representatives; where they conflict
(g . g_ref < 0) the step follows g projected onto the half-space that does not increase the
representatives' loss: g - (g . g_ref / g_ref . g_ref) g_ref.

With data parallelism both gradients are averaged over ranks *before* the projection (one
allreduce of [g, g_ref]), and every rank then projects the same two vectors. The constraint
is about the global step: the averaged update must not conflict with the averaged reference
(every rank's representatives, R x world of them), and projecting each rank's gradient locally
would guarantee that for no one (an average of locally projected gradients can still conflict
with the average reference). Ranks that drew no representatives yet (an empty buffer) add a zero
reference and are not counted in its average.

The forward passes go through the bare model and the gradients are taken with autograd.grad,
so neither DDP nor Horovod averages them a second time; the optimizer steps on the projected
gradient (clipped by --clip-grad-norm). With Adam (this agent's default optimizer) the update is
the projected gradient rescaled per weight, as in other A-GEM implementations; with plain SGD it
is the projected gradient itself. fp16's loss scaling is not supported (use --amp bf16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.agent import StepResult
from agents.er import ERAgent
from agents.registry import register
from common.errors import UserError


def project(grad: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection: `grad` unchanged unless it conflicts with `reference`."""
    dot = torch.dot(grad, reference)
    if dot >= 0:
        return grad
    return grad - (dot / torch.dot(reference, reference).clamp(min=1e-12)) * reference


@register("agem")
class AGEMAgent(ERAgent):
    # The paper's memory: earlier tasks only (offer 'task_end'), so the reference is the past's
    # gradient and not partly the current task's. Adam, as in van de Ven et al.'s class-incremental
    # comparison. Default experiment, seed 0: 77.5% (SGD lr 0.125: 34.8%, reservoir during the task: 40.3%).
    defaults = {**ERAgent.defaults, "offer": "task_end"}
    run_defaults = {"optimizer": "adam", "lr": 0.002}

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        if ctx.precision is not None and ctx.precision.scaler is not None:
            raise UserError(f"agent {self.name} projects gradients itself and does not take --amp fp16 (loss scaling); "
                            "valid choices for it: --amp off, bf16")
        self.params = [p for p in ctx.module.parameters() if p.requires_grad]

    def _gradient(self, inputs, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, flat gradient) of the cross-entropy on one batch, through the bare model."""
        with self.autocast():
            loss = F.cross_entropy(self.ctx.module(inputs), labels)
        grads = torch.autograd.grad(loss, self.params)
        return loss, torch.cat([g.reshape(-1).float() for g in grads])

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        wait_s, batch = self.memory.next_batch(x, y)
        b, n = batch.b, batch.n
        with self.autocast():
            inputs = self.ctx.preprocess(batch.x)
        loss, grad = self._gradient(inputs[:b], batch.y[:b])
        reference = torch.zeros_like(grad)
        if n:
            _, reference = self._gradient(inputs[b:b + n], batch.y[b:b + n])
        wait_s += self.memory.insert(x, y)  # the next draw starts
        engine = self.ctx.engine
        both = torch.cat([grad, reference, grad.new_tensor([1.0 if n else 0.0])])
        if engine.world_size > 1:  # one allreduce of both gradients and the count of references
            both = engine.allreduce_sum(both.cpu()).to(grad.device)
        size = len(grad)
        grad, count = both[:size] / engine.world_size, both[-1].item()
        if count:
            reference = both[size:2 * size] / count
            projected = project(grad, reference)
            conflict = projected is not grad
            grad = projected
        else:
            conflict = False
        self._step(grad)
        return StepResult(loss=loss.item(), samples=b + n, wait_s=wait_s,
                          losses={"ce_loss": loss.item(), "projected": float(conflict)})

    def _step(self, grad: torch.Tensor) -> None:
        """The optimizer step on an already averaged flat gradient."""
        offset = 0
        for p in self.params:
            p.grad = grad[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        if self.ctx.precision is not None:
            self.ctx.precision.step_averaged(self.ctx.optimizer)  # clipped; no second allreduce
        else:
            self.ctx.optimizer.step()
