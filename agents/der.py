"""`der`: Dark Experience Replay (Buzzega et al., NeurIPS 2020).

The buffer stores each sample's logits at insertion (as extras beside the sample); the
loss adds alpha x MSE between the model's current logits on the representatives and
their stored logits, which distils the past model's function rather than only its labels.
"""
from __future__ import annotations

import torch.nn.functional as F

from agents.er import ERAgent
from agents.registry import register


@register("der")
class DERAgent(ERAgent):
    defaults = {**ERAgent.defaults, "alpha": 0.7}
    run_defaults = {"lr": 0.0625, "momentum": 0.9}  # with alpha, scripts/hpo_spaces/der.yaml (README, Benchmarks)

    @property
    def num_extras(self) -> int:
        return self.ctx.num_classes

    def extras_of(self, new_logits):
        return new_logits.detach().float().cpu()  # float32 whatever --amp computed them in

    def loss(self, logits, ys, b: int, n: int, reps_extras):
        ce = F.cross_entropy(logits[:b], ys[:b])
        if n == 0:
            return ce, {"ce_loss": ce.item()}
        mse = F.mse_loss(logits[b:b + n], reps_extras)
        terms = {"ce_loss": ce.item(), "mse_loss": mse.item()}
        return ce + self.options["alpha"] * mse, terms
