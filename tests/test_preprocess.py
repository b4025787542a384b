"""On-device preprocessing: normalisation of uint8 batches and the training augmentation."""
import torch

from trainer.preprocess import Normalize, RandomCropFlip


def test_normalize_uint8_to_standardised_float():
    norm = Normalize(mean=(0.5,), std=(0.25,), device=torch.device("cpu"))
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    out = norm(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out.view(-1), torch.tensor([-2.0, 2.0]), atol=1e-5)


def test_random_crop_flip_returns_a_window_of_the_padded_image():
    torch.manual_seed(0)
    p = 2
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = RandomCropFlip(p)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    flips = shifts = 0
    for i in range(len(x)):
        windows = {(dy, dx, f) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (0, 1)
                   if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(padded[i, :, dy:dy + 8, dx:dx + 8]))}
        assert windows, f"sample {i} is not a (flipped) crop of its padded image"
        dy, dx, f = min(windows)
        flips += f
        shifts += (dy, dx) != (p, p)
    assert 16 < flips < 48 and shifts > 40  # both happen, at random


def test_random_crop_flip_is_seeded():
    x = torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(3)
    a = RandomCropFlip()(x)
    torch.manual_seed(3)
    assert torch.equal(a, RandomCropFlip()(x))
