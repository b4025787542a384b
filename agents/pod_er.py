"""`pod_er`: experience replay plus pooled-output distillation (PODNet, Douillard et al., ECCV
2020) on the representatives: their intermediate feature maps, pooled (`distillation_type`),
are kept close to those of the model as it was at the end of the previous task (agents/pod.py).
Renate's PooledOutputDistillationExperienceReplayLearner, on the global buffer."""
from __future__ import annotations

from agents.er import ERAgent
from agents.option_ranges import LOSS_WEIGHT
from agents.pod import DISTILLATION_TYPES, PreviousModelDistiller
from agents.registry import register


@register("pod_er")
class PODERAgent(ERAgent):
    defaults = {**ERAgent.defaults, "alpha": 1.0, "distillation_type": "spatial", "normalize": True}
    choices = {**ERAgent.choices, "distillation_type": DISTILLATION_TYPES, "normalize": (True, False)}
    ranges = {**ERAgent.ranges, "alpha": LOSS_WEIGHT}

    def before_training(self) -> None:
        super().before_training()
        self.pod = PreviousModelDistiller(self.ctx.module, self.options["distillation_type"],
                                          self.options["normalize"])

    def forward(self, inputs):
        return self.pod.forward(self.ctx.model, inputs)

    def loss(self, logits, batch, inputs):
        loss, terms = super().loss(logits, batch, inputs)
        pod = self.pod.loss(inputs, batch.b, batch.b + batch.n)
        if pod is None:
            return loss, terms
        terms["pod_loss"] = pod.item()
        return loss + self.options["alpha"] * pod, terms

    def after_task(self, task) -> None:
        super().after_task(task)
        self.pod.end_task(self.ctx.module)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pod": self.pod.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.pod.load_state_dict(self.replicated(state)["pod"], self.ctx.module)
