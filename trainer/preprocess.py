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


class RandomCropFlip(torch.nn.Module):
    """Training-time augmentation on the device, batch-wise: a random crop of the image padded
    by `padding` pixels (zeros) and a random horizontal flip, per sample (the usual CIFAR recipe:
    padding 4 on 32x32).
    Applied to the new samples and the representatives alike, after the draw."""

    def __init__(self, padding: int = 4):
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        flip = (torch.rand(n, 1, 1, device=x.device) < 0.5)
        across = torch.arange(w, device=x.device).view(1, 1, w)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.where(flip, w - 1 - across, across) + dx).expand(n, h, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)
