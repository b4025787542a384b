"""Models by name: ``build_model(name, num_classes, sample_shape, options)``.

Random initialisation only (nothing is downloaded); seed torch before building for a
reproducible init. Input channels and class count come from the dataset.

Every model names its intermediate feature stages (``stage_names``, read by
``feature_stages``): POD distillation (agents pod_er, super_er) compares their outputs.

Options: ``mnistnet``: hidden (128). The torchvision models: small_input_stem
(null = automatic, on when H and W <= 32; true; false).
"""
from typing import Callable

from torch import nn

from common.errors import UserError

from . import convnext, efficientnet, mnistnet, resnet

# name -> builder(num_classes: int, sample_shape: (C, H, W), options: dict | None) -> nn.Module
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnistnet": mnistnet.build,
    "resnet18": resnet.build_resnet18,
    "resnet50": resnet.build_resnet50,
    "efficientnetv2": efficientnet.build,
    "convnext": convnext.build,
}


def build_model(name: str, num_classes: int, sample_shape, options: dict | None = None) -> nn.Module:
    """A freshly initialised ``name`` for ``num_classes`` classes and inputs of ``sample_shape``.

    >>> build_model("mnistnet", 10, (1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if len(sample_shape) != 3:
        raise ValueError(f"sample_shape must be (C, H, W), got {tuple(sample_shape)}")
    return MODELS[name](int(num_classes), tuple(int(s) for s in sample_shape), options)


def feature_stages(model: nn.Module) -> list[nn.Module]:
    """The submodules whose outputs are the model's intermediate features, shallow to deep."""
    names = getattr(model, "stage_names", None)
    if not names:
        raise UserError(f"model {type(model).__name__} names no feature stages (attribute stage_names); "
                        f"POD distillation needs them")
    return [model.get_submodule(name) for name in names]


__all__ = ["MODELS", "build_model", "feature_stages"]
