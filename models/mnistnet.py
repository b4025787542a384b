"""A small CNN for small grey or colour images (8x8 digits, 28x28 MNIST, 32x32 CIFAR).

Two 3x3 conv blocks (padding 1, so any input of at least 1x1 works), an adaptive average
pool to 4x4, then two linear layers. Option ``hidden`` (128): width of the first one.
Its feature stages (for POD distillation) are the two conv blocks' activations.
"""
import torch
from torch import nn

from common.errors import UserError

from .common import check_options


class MnistNet(nn.Module):
    stage_names = ("features.1", "features.3")  # the conv blocks' ReLU outputs (models.feature_stages)

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    hidden = check_options("mnistnet", options, {"hidden": 128})["hidden"]
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise UserError(f"model 'mnistnet': hidden must be a positive integer, got {hidden!r}")
    return MnistNet(sample_shape[0], num_classes, hidden)
