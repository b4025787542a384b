"""torchvision's EfficientNetV2-S, randomly initialised, for any channel count.

Small-input stem: the first 3x3 conv has stride 1 instead of 2 (total downsampling 16, not 32).
"""
from torch import nn
from torchvision import models as tvm

from .common import check_options, small_stem


def build(num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    opts = check_options("efficientnetv2", options, {"small_input_stem": None})
    small = small_stem("efficientnetv2", sample_shape, opts["small_input_stem"])
    model = tvm.efficientnet_v2_s(weights=None, num_classes=num_classes)
    old = model.features[0][0]
    if small or sample_shape[0] != old.in_channels:
        conv = nn.Conv2d(sample_shape[0], old.out_channels, kernel_size=3, stride=1 if small else 2,
                         padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        model.features[0][0] = conv
    model.stage_names = tuple(f"features.{i}" for i in range(1, len(model.features)))  # the MBConv stages
    return model
