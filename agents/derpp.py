"""`derpp`: DER++ (Buzzega et al., NeurIPS 2020): DER plus beta x cross-entropy on the
representatives' stored labels. The same R representatives serve both terms (the paper
draws two batches; one draw halves the buffer traffic, which is what matters at scale)."""
from __future__ import annotations

import torch.nn.functional as F

from agents.der import DERAgent
from agents.option_ranges import LOSS_WEIGHT
from agents.registry import register


@register("derpp")
class DERPPAgent(DERAgent):
    defaults = {**DERAgent.defaults, "alpha": 0.5, "beta": 0.8}
    ranges = {**DERAgent.ranges, "beta": LOSS_WEIGHT}
    run_defaults = {"lr": 0.125, "momentum": 0.5}  # with alpha, beta: scripts/hpo_spaces/derpp.yaml (README)

    def loss(self, logits, batch, inputs):
        loss, terms = super().loss(logits, batch, inputs)
        b, n = batch.b, batch.n
        if n == 0 or not self.options["beta"]:
            return loss, terms
        ce_reps = F.cross_entropy(logits[b:b + n], batch.y[b:b + n])
        terms["replay_ce_loss"] = ce_reps.item()
        return loss + self.options["beta"] * ce_reps, terms
