"""torchvision's ResNet-18/50, randomly initialised, for any channel count.

Small-input stem (the usual CIFAR variant): conv1 is 3x3 stride 1 and the max-pool goes.
"""
from torch import nn
from torchvision import models as tvm

from .common import check_options, small_stem


def _build(name: str, factory, num_classes: int, sample_shape, options: dict | None) -> nn.Module:
    opts = check_options(name, options, {"small_input_stem": None})
    small = small_stem(name, sample_shape, opts["small_input_stem"])
    model = factory(weights=None, num_classes=num_classes)
    channels = sample_shape[0]
    if small:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.stage_names = ("layer1", "layer2", "layer3", "layer4")
    return model


def build_resnet18(num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    return _build("resnet18", tvm.resnet18, num_classes, sample_shape, options)


def build_resnet50(num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    return _build("resnet50", tvm.resnet50, num_classes, sample_shape, options)
