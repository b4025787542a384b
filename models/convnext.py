"""torchvision's ConvNeXt-Tiny, randomly initialised, for any channel count.

The stem is a patchify conv (kernel = stride = 4) followed by three 2x2 stride-2
downsamplings, so the stem's output must be at least 8x8. Small-input stem: patch 2
when H and W are at least 16, else patch 1 (32x32 -> 16x16 ... 2x2 at the last stage).
"""
from torch import nn
from torchvision import models as tvm

from common.errors import UserError

from .common import check_options, small_stem


def build(num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    opts = check_options("convnext", options, {"small_input_stem": None})
    small = small_stem("convnext", sample_shape, opts["small_input_stem"])
    channels, h, w = sample_shape
    patch = (2 if min(h, w) >= 16 else 1) if small else 4
    if min(h, w) // patch < 8:
        raise UserError(f"model 'convnext' needs inputs of at least {8 * patch}x{8 * patch} with "
                        f"{'the small' if small else 'the standard'} stem, got {h}x{w}")
    model = tvm.convnext_tiny(weights=None, num_classes=num_classes)
    old = model.features[0][0]
    if patch != 4 or channels != old.in_channels:
        conv = nn.Conv2d(channels, old.out_channels, kernel_size=patch, stride=patch, bias=True)
        nn.init.trunc_normal_(conv.weight, std=0.02)
        nn.init.zeros_(conv.bias)
        model.features[0][0] = conv
    model.stage_names = ("features.1", "features.3", "features.5", "features.7")  # the four stages
    return model
