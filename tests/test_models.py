"""models/: output shapes on the input sizes the datasets give, stems, options and errors."""
import pytest
import torch
from torch import nn

from common.errors import UserError
from models import MODELS, build_model


def forward(model: nn.Module, shape, batch: int = 2) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_mnistnet_shapes(shape):
    model = build_model("mnistnet", 10, shape, {"hidden": 32})
    assert forward(model, shape).shape == (2, 10)
    assert model.classifier[1].out_features == 32


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_resnet18_shapes_and_stem(shape):
    torch.manual_seed(0)
    model = build_model("resnet18", 7, shape)
    assert forward(model, shape).shape == (2, 7)
    assert model.conv1.in_channels == shape[0]
    small = shape[1] <= 32
    assert model.conv1.kernel_size == ((3, 3) if small else (7, 7))
    assert isinstance(model.maxpool, nn.Identity) == small


def test_stem_option_overrides_the_size_rule():
    big = build_model("resnet18", 5, (3, 32, 32), {"small_input_stem": False})
    assert big.conv1.stride == (2, 2) and isinstance(big.maxpool, nn.MaxPool2d)
    small = build_model("resnet18", 5, (3, 64, 64), {"small_input_stem": True})
    assert small.conv1.stride == (1, 1)
    eff = build_model("efficientnetv2", 5, (1, 28, 28))
    assert eff.features[0][0].stride == (1, 1) and eff.features[0][0].in_channels == 1
    assert build_model("convnext", 5, (3, 32, 32)).features[0][0].stride == (2, 2)
    assert build_model("convnext", 5, (3, 64, 64)).features[0][0].stride == (4, 4)


# The heavy models: one small forward each, on the hardest (smallest) input for their stem.
@pytest.mark.parametrize("name,shape", [("resnet50", (3, 32, 32)), ("efficientnetv2", (1, 8, 8)),
                                        ("convnext", (1, 8, 8))])
def test_heavy_models_forward(name, shape):
    assert forward(build_model(name, 12, shape), shape).shape == (2, 12)


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = build_model("mnistnet", 10, (1, 8, 8))
    torch.manual_seed(3)
    b = build_model("mnistnet", 10, (1, 8, 8))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_errors():
    with pytest.raises(UserError) as err:
        build_model("vgg16", 10, (3, 32, 32))
    for name in MODELS:
        assert name in str(err.value)
    with pytest.raises(UserError, match="valid options: hidden"):
        build_model("mnistnet", 10, (1, 8, 8), {"width": 3})
    with pytest.raises(UserError, match="valid options: small_input_stem"):
        build_model("convnext", 10, (3, 32, 32), {"pretrained": True})
    with pytest.raises(UserError, match="small_input_stem must be"):
        build_model("resnet50", 10, (3, 32, 32), {"small_input_stem": "yes"})
    with pytest.raises(UserError, match="at least 32x32"):
        build_model("convnext", 10, (1, 28, 28), {"small_input_stem": False})
