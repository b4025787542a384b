"""Copies of the model that agents keep beside it (the previous task's model, EMA models), and
how they are moved. A copy never trains and is kept in eval mode: its batch statistics are
the ones it was copied or averaged with."""
from __future__ import annotations

import copy

import torch


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A detached copy of `module` in eval mode, without its forward hooks (a FeatureTap on the
    model must not record the copy's passes)."""
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        sub._forward_hooks.clear()
    clone.eval()
    clone.requires_grad_(False)
    return clone


@torch.no_grad()
def ema_update(average: torch.nn.Module, module: torch.nn.Module, weight: float) -> None:
    """average <- weight * average + (1 - weight) * module, parameter by parameter; buffers (batch
    statistics, counters) are copied."""
    for a, p in zip(average.parameters(), module.parameters()):
        a.mul_(weight).add_(p.detach(), alpha=1.0 - weight)
    for a, b in zip(average.buffers(), module.buffers()):
        a.copy_(b)
