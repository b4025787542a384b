"""uint8 images -> normalised float, on the device the model trains on.

Data and representatives stay uint8 (4x smaller) until this point, so a buffer of images
costs what the images cost, and the host-to-device copy moves a quarter of the bytes.
"""
from __future__ import annotations

import torch


class Normalize(torch.nn.Module):
    def __init__(self, mean, std, device):
        super().__init__()
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(shape))
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=device).view(shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return (x.float() - self.mean * 255.0) * self.scale
        return (x.float() * 255.0 - self.mean * 255.0) * self.scale
