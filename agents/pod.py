"""Pooled-output distillation (PODNet, Douillard et al., ECCV 2020): the intermediate feature maps
of the current model, pooled, are kept close to those of the model as it was at the end of the
previous task. Pooling (rather than matching maps element by element) leaves the model free to
move features within a row or column, which is what lets it still learn new classes.

`FeatureTap` records the outputs of a model's feature stages (models.feature_stages) during a
forward pass; `pod_loss` compares two such lists.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from agents.model_copies import frozen_copy
from models import feature_stages

DISTILLATION_TYPES = ("spatial", "channel", "width", "height", "gap", "flat")


class FeatureTap:
    """Forward hooks on a model's feature stages; `maps` holds their outputs of the last forward
    pass (in stage order) while the tap is on. Works through DDP: the hooks sit on the bare model."""

    def __init__(self, module: torch.nn.Module):
        self.maps: list[torch.Tensor] = []
        self.on = False
        self._hooks = [stage.register_forward_hook(self._record) for stage in feature_stages(module)]

    def __deepcopy__(self, memo):
        """A copy of the tapped model shares the tap (model_copies.frozen_copy then drops its
        hooks): the recorded maps are part of an autograd graph and cannot be copied."""
        return self

    def _record(self, _module, _inputs, output) -> None:
        if self.on:
            self.maps.append(output)

    @contextlib.contextmanager
    def capture(self):
        """Record the stages' outputs of the forward passes inside the block (cleared on entry)."""
        self.maps, self.on = [], True
        try:
            yield self.maps
        finally:
            self.on = False

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def pool(maps: torch.Tensor, distillation_type: str) -> torch.Tensor:
    """One stage's (N, C, H, W) activations, squared and pooled as PODNet does, flattened per sample."""
    a = maps.float().pow(2)
    if a.dim() != 4:  # a stage with no spatial layout (a linear layer): compare it whole
        return a.flatten(1)
    n = a.shape[0]
    if distillation_type == "spatial":  # width and height pooling, side by side
        return torch.cat([a.sum(dim=3).reshape(n, -1), a.sum(dim=2).reshape(n, -1)], dim=1)
    if distillation_type == "channel":
        return a.sum(dim=1).reshape(n, -1)
    if distillation_type == "width":
        return a.sum(dim=2).reshape(n, -1)
    if distillation_type == "height":
        return a.sum(dim=3).reshape(n, -1)
    if distillation_type == "gap":
        return F.adaptive_avg_pool2d(a, 1).reshape(n, -1)
    if distillation_type == "flat":
        return a.reshape(n, -1)
    raise ValueError(f"unknown distillation_type {distillation_type!r}; valid: {', '.join(DISTILLATION_TYPES)}")


def pod_loss(new: list[torch.Tensor], old: list[torch.Tensor], distillation_type: str = "spatial",
             normalize: bool = True) -> torch.Tensor:
    """Mean over stages of the per-sample L2 distance between pooled features, averaged over samples."""
    if len(new) != len(old) or not new:
        raise ValueError(f"pod_loss needs the same non-zero number of stages, got {len(new)} and {len(old)}")
    total = new[0].new_zeros((), dtype=torch.float32)
    for a, b in zip(new, old):
        a, b = pool(a, distillation_type), pool(b.detach(), distillation_type)
        if normalize:
            a, b = F.normalize(a, dim=1, p=2), F.normalize(b, dim=1, p=2)
        total = total + (a - b).norm(dim=1).mean()
    return total / len(new)


class PreviousModelDistiller:
    """The previous task's model and the POD term against it: `forward` runs the current model
    recording its features, `loss` compares the features of rows [start, stop) with the previous
    model's on the same inputs (None during the first task, when there is no previous model)."""

    def __init__(self, module: torch.nn.Module, distillation_type: str, normalize: bool):
        self.tap = FeatureTap(module)
        self.distillation_type, self.normalize = distillation_type, normalize
        self.previous = self.previous_tap = None
        self.maps: list[torch.Tensor] = []

    def forward(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        with self.tap.capture() as maps:
            logits = model(inputs)
        self.maps = maps
        return logits

    def loss(self, inputs: torch.Tensor, start: int, stop: int):
        if self.previous is None or stop <= start:
            return None
        with torch.no_grad(), self.previous_tap.capture() as old:
            self.previous(inputs[start:stop])
        loss = pod_loss([m[start:stop] for m in self.maps], old, self.distillation_type, self.normalize)
        self.maps = []  # the graph is freed with the loss
        return loss

    def end_task(self, module: torch.nn.Module) -> None:
        """Keep the model as trained on the task just ended."""
        self.previous = frozen_copy(module)
        self.previous_tap = FeatureTap(self.previous)

    def state_dict(self) -> dict:
        return {"previous": None if self.previous is None else self.previous.state_dict()}

    def load_state_dict(self, state: dict, module: torch.nn.Module) -> None:
        self.previous = self.previous_tap = None
        if state["previous"] is not None:
            self.end_task(module)
            self.previous.load_state_dict(state["previous"])
