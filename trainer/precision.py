"""Mixed precision (``--amp``) and memory format (``--channels-last``) of a run.

- ``bf16``: autocast to bfloat16 for the forward pass and the losses. bf16 keeps fp32's exponent
  range, so gradients need no loss scaling; it runs on A100/H100 GPUs and on CPUs (CI tests it).
- ``fp16``: autocast to float16 with a ``GradScaler`` (the reference's setting on V100-era GPUs);
  CUDA only. With Horovod the gradients are averaged before the scaler looks at them
  (``synchronize``; ``unscale_``; ``step`` under ``skip_synchronize``), so every rank sees the
  same inf/NaN and skips the same steps; DDP averages in ``backward`` and needs nothing special.

Weights, optimizer state and stored DER logits stay float32 in every mode. ``--clip-grad-norm``
clips the averaged, unscaled gradients, so every rank clips the same gradient by the same factor.
"""
from __future__ import annotations

import contextlib

import torch

from common.errors import UserError
from trainer.config import AMP_MODES

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_device(amp: str, device_name: str) -> None:
    """Refuse fp16 where there is no GPU, before anything is started or written."""
    if amp != "fp16":
        return
    if device_name == "cpu":
        raise UserError("--amp fp16 needs a CUDA GPU and --device cpu was asked for; "
                        "valid choices on the CPU: off, bf16")
    if not torch.cuda.is_available():
        raise UserError("--amp fp16 needs a CUDA GPU and torch sees none; valid choices here: off, bf16")


class ChannelsLast(torch.nn.Module):
    """Hands a CNN its input batch in NHWC memory order (tensor cores' native layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _step_without_allreduce(optimizer, step) -> None:
    """`step()` on gradients already averaged over ranks: Horovod's optimizer must not average them again."""
    if hasattr(optimizer, "skip_synchronize"):  # Horovod's DistributedOptimizer
        with optimizer.skip_synchronize():
            step()
    else:
        step()


class Precision:
    """Autocast context and the backward/step of one run's ``--amp`` mode on ``device``."""

    def __init__(self, amp: str, device: torch.device, clip_grad_norm: float = 0.0):
        if amp not in AMP_MODES:
            raise UserError(f"unknown amp {amp!r}; valid choices: {', '.join(AMP_MODES)}")
        check_device(amp, device.type)
        self.amp, self.device, self.clip_grad_norm = amp, device, clip_grad_norm
        self.dtype = DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.skipped_steps = 0  # fp16: steps the GradScaler skipped (overflowed gradients), not divergence
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: autotune each conv once

    def autocast(self):
        """Context for the forward pass and the losses (not the backward pass)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer) -> None:
        """``loss.backward()`` and the optimizer step, through the GradScaler in fp16 mode."""
        horovod = hasattr(optimizer, "skip_synchronize")  # Horovod's DistributedOptimizer
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if horovod and (scaler is not None or self.clip_grad_norm):
            optimizer.synchronize()                  # averaged (still scaled) gradients in place
        if scaler is not None and (horovod or self.clip_grad_norm):
            scaler.unscale_(optimizer)               # inf check and unscale on the averaged ones
        self._clip(optimizer)
        step = optimizer.step if scaler is None else (lambda: scaler.step(optimizer))
        if horovod and (scaler is not None or self.clip_grad_norm):
            _step_without_allreduce(optimizer, step)
        else:
            step()
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.update()
            if scaler.get_scale() < scale:  # the scale is lowered exactly when the step was skipped
                self.skipped_steps += 1

    def step_averaged(self, optimizer) -> None:
        """The step on gradients the caller set and averaged over ranks itself (A-GEM's projected
        gradient): clipped like any step, and under Horovod without a second allreduce."""
        self._clip(optimizer)
        _step_without_allreduce(optimizer, optimizer.step)

    def _clip(self, optimizer) -> None:
        if self.clip_grad_norm:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

    def state_dict(self) -> dict:
        """The loss scale and its growth tracker (fp16), so a resumed run scales the same, and the
        count of skipped steps."""
        if self.scaler is None:
            return {}
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state["scaler"])
            self.skipped_steps = state["skipped_steps"]
