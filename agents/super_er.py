"""`super_er`: Renate's SuperExperienceReplayLearner on the global buffer, the rehearsal family's
terms in one loss, each with its own weight (0 removes the term and its cost):

  cross-entropy on the new samples
  + alpha x MSE to the representatives' stored logits and beta x their cross-entropy  (DER++)
  + cls_alpha x CLS-ER's consistency toward the plastic/stable EMA copies             (cls_*)
  + pod_alpha x POD distillation toward the previous task's model                     (pod_*)

and shrink-and-perturb at the start of every task after the first: each weight becomes
sp_shrink_factor x weight + N(0, sp_sigma^2) (Ash & Adams, NeurIPS 2020), the same on every rank
(seeded by task). Renate's der_alpha and der_beta are `alpha` and `beta` here (the DER++ options
this agent inherits, with Renate's defaults); its ema_memory_update_gamma is DER's `logits: 'ema'`
with `gamma`. Evaluated with the working model.
"""
from __future__ import annotations

import torch

from agents.cls_er import CLS_OPTIONS, CLS_RANGES, make_teachers
from agents.derpp import DERPPAgent
from agents.option_ranges import LOSS_WEIGHT, SHRINK_FACTOR, STD
from agents.pod import DISTILLATION_TYPES, PreviousModelDistiller
from agents.registry import register
from common.seeding import stream_seed

SHRINK_PERTURB_STREAM = 9100  # + task index: the noise of each task boundary


@torch.no_grad()
def shrink_perturb(module: torch.nn.Module, shrink: float, sigma: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * sigma
        p.mul_(shrink).add_(noise.to(p.device, p.dtype))


@register("super_er")
class SuperERAgent(DERPPAgent):
    defaults = {**DERPPAgent.defaults, "alpha": 1.0, "beta": 1.0, "sp_shrink_factor": 0.95, "sp_sigma": 0.001,
                "cls_alpha": 0.1, **{"cls_" + key: value for key, value in CLS_OPTIONS.items()},
                "pod_alpha": 1.0, "pod_distillation_type": "spatial", "pod_normalize": True}
    choices = {**DERPPAgent.choices, "pod_distillation_type": DISTILLATION_TYPES, "pod_normalize": (True, False)}
    ranges = {**DERPPAgent.ranges, "sp_shrink_factor": SHRINK_FACTOR, "sp_sigma": STD, "cls_alpha": LOSS_WEIGHT,
              **{"cls_" + key: kind for key, kind in CLS_RANGES.items()}, "pod_alpha": LOSS_WEIGHT}

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.teachers = make_teachers(self, prefix="cls_") if self.options["cls_alpha"] else None

    def before_training(self) -> None:
        super().before_training()
        self.pod = None
        if self.options["pod_alpha"]:
            self.pod = PreviousModelDistiller(self.ctx.module, self.options["pod_distillation_type"],
                                              self.options["pod_normalize"])

    def before_task(self, task, resumed: bool = False) -> None:
        super().before_task(task, resumed)
        o = self.options
        if not resumed and task.index > 0 and (o["sp_shrink_factor"] != 1.0 or o["sp_sigma"]):
            shrink_perturb(self.ctx.module, o["sp_shrink_factor"], o["sp_sigma"],
                           stream_seed(self.ctx.seed, SHRINK_PERTURB_STREAM + task.index))

    def forward(self, inputs):
        return self.pod.forward(self.ctx.model, inputs) if self.pod is not None else super().forward(inputs)

    def loss(self, logits, batch, inputs):
        loss, terms = super().loss(logits, batch, inputs)
        b, n = batch.b, batch.n
        if self.teachers is not None and n:
            consistency = self.teachers.loss(logits[b:b + n], inputs[b:b + n], batch.y[b:b + n])
            terms["consistency_loss"] = consistency.item()
            loss = loss + self.options["cls_alpha"] * consistency
        pod = self.pod.loss(inputs, b, b + n) if self.pod is not None else None
        if pod is not None:
            terms["pod_loss"] = pod.item()
            loss = loss + self.options["pod_alpha"] * pod
        return loss, terms

    def optimize(self, loss) -> None:
        super().optimize(loss)
        if self.teachers is not None:
            self.teachers.update(self.ctx.module)

    def after_task(self, task) -> None:
        super().after_task(task)
        if self.pod is not None:
            self.pod.end_task(self.ctx.module)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.teachers is not None:
            state["teachers"] = self.teachers.state_dict()
        if self.pod is not None:
            state["pod"] = self.pod.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        own = self.replicated(state)
        if self.teachers is not None:
            self.teachers.load_state_dict(own["teachers"])
        if self.pod is not None:
            self.pod.load_state_dict(own["pod"], self.ctx.module)
