"""CLS-ER's two semantic memories (Arani et al., ICLR 2022): a plastic and a stable copy of the
model, each an exponential moving average of the working model updated stochastically after an
optimizer step (the plastic one often, the stable one seldom: fast and slow consolidation), and
the consistency targets they give on the representatives.

The EMA weight ramps up as min(1 - 1 / (step + 1), weight) (so early on a copy is the plain
average of the iterates so far, not a copy of the random initialisation). The coin flips come
from one generator seeded identically on every rank, so with data parallelism (identical
working models after each step) every rank's copies stay identical without communication.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.model_copies import ema_update, frozen_copy


class ConsistencyTeachers:
    def __init__(self, module: torch.nn.Module, seed: int, plastic_weight: float, plastic_probability: float,
                 stable_weight: float, stable_probability: float):
        self.plastic, self.stable = frozen_copy(module), frozen_copy(module)
        self.weights = {"plastic": plastic_weight, "stable": stable_weight}
        self.probabilities = {"plastic": plastic_probability, "stable": stable_probability}
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    def update(self, module: torch.nn.Module) -> dict:
        """After an optimizer step: flip each copy's coin, move the ones that won toward `module`;
        returns {name: EMA weight used, or None when not updated}."""
        self.step += 1
        coins = torch.rand(2, generator=self.generator).tolist()
        used = {}
        for coin, name in zip(coins, ("plastic", "stable")):
            used[name] = None
            if coin < self.probabilities[name]:
                used[name] = min(1.0 - 1.0 / (self.step + 1), self.weights[name])
                ema_update(getattr(self, name), module, used[name])
        return used

    @torch.no_grad()
    def targets(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per sample, the logits of whichever copy gives the true label the higher probability."""
        plastic, stable = self.plastic(inputs).float(), self.stable(inputs).float()
        rows = torch.arange(len(labels), device=labels.device)
        p_plastic = F.softmax(plastic, dim=1)[rows, labels]
        p_stable = F.softmax(stable, dim=1)[rows, labels]
        return torch.where((p_stable >= p_plastic).unsqueeze(1), stable, plastic)

    def loss(self, logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The consistency term: MSE between the working model's logits and the targets."""
        return F.mse_loss(logits.float(), self.targets(inputs, labels))

    def state_dict(self) -> dict:
        return {"plastic": self.plastic.state_dict(), "stable": self.stable.state_dict(),
                "generator": self.generator.get_state(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.plastic.load_state_dict(state["plastic"])
        self.stable.load_state_dict(state["stable"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
