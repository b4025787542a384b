"""`der`: Dark Experience Replay (Buzzega et al., NeurIPS 2020).

The buffer stores each sample's logits beside it (as extras); the loss adds alpha x MSE between
the model's current logits on the representatives and their stored logits, which distils the
past model's function rather than only its labels.

Which logits are stored (`logits`):
  'insert'    the logits computed when the sample was inserted, during training (the paper's);
  'task_end'  (the default) at the end of each task every rank recomputes, with the model as trained, the
              logits of the samples its slice took during that task, and rewrites them in place;
  'ema'       Renate's rule: each time a representative is replayed, its stored logits move
              toward the current ones, stored <- gamma * stored + (1 - gamma) * current (the new
              value is written on the rank that owns the sample).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.er import ERAgent
from agents.option_ranges import EMA_WEIGHT, LOSS_WEIGHT
from agents.registry import register


@register("der")
class DERAgent(ERAgent):
    # logits 'task_end': README, Benchmarks (DER's stored logits): better in every setting measured
    defaults = {**ERAgent.defaults, "alpha": 0.7, "logits": "task_end", "gamma": 0.9}
    choices = {**ERAgent.choices, "logits": ("insert", "task_end", "ema")}
    ranges = {**ERAgent.ranges, "alpha": LOSS_WEIGHT, "gamma": EMA_WEIGHT}
    run_defaults = {"lr": 0.0625, "momentum": 0.9}  # with alpha, scripts/hpo_spaces/der.yaml (README)

    @property
    def num_extras(self) -> int:
        return self.ctx.num_classes

    @property
    def track_where(self) -> bool:
        return self.options["logits"] == "ema"

    def extras_of(self, new_logits):
        return new_logits.detach().float().cpu()  # float32 whatever --amp computed them in

    def loss(self, logits, batch, inputs):
        b, n = batch.b, batch.n
        ce = F.cross_entropy(logits[:b], batch.y[:b])
        if n == 0 or not self.options["alpha"]:  # alpha 0: no distillation term at all
            return ce, {"ce_loss": ce.item()}
        mse = F.mse_loss(logits[b:b + n], batch.extras)
        return ce + self.options["alpha"] * mse, {"ce_loss": ce.item(), "mse_loss": mse.item()}

    def replayed(self, logits, batch) -> None:
        if self.options["logits"] != "ema":
            return
        gamma = self.options["gamma"]
        n = batch.n
        current = logits[batch.b:batch.b + n].detach().float()
        updated = gamma * batch.extras + (1.0 - gamma) * current if n else current
        self.memory.send_extras(batch.where[:n], updated)  # collective, even with nothing to send

    def after_task(self, task) -> None:
        super().after_task(task)
        if self.options["logits"] == "task_end" and self.options["offer"] != "task_end":
            self.memory.refresh_task_extras(self.eval_logits)

    def task_end_extras(self, x):
        """offer 'task_end': the logits of the model as trained (eval mode), whatever `logits` says."""
        return self.eval_logits(x)

    @torch.no_grad()
    def eval_logits(self, x):
        """The model's logits on uint8 samples, as trained: eval mode, no augmentation, float32
        on the CPU (so batch statistics do not move)."""
        model, preprocess = self.ctx.module, self.ctx.eval_preprocess or self.ctx.preprocess
        was_training = model.training
        model.eval()
        try:
            with self.autocast():
                return model(preprocess(self.to_device(x))).float().cpu()
        finally:
            model.train(was_training)
