"""Tiny-ImageNet and ImageNet (or a subset of its classes) from image folders.

Class indices are the sorted class-folder names of ``train/``; the same mapping labels
the validation images, which serve as the test split. Images are decoded on demand
(RGB, shorter side resized to ``image_size``, centre crop), see ``FolderSplit``.

- ``tinyimagenet``: ``root/tiny-imagenet-200/`` (or ``root`` itself) with
  ``train/<wnid>/images/*.JPEG`` and either the original ``val/images/*.JPEG`` +
  ``val/val_annotations.txt`` or ``val/<wnid>/*`` folders. Option ``image_size`` (64).
- ``imagenet``: ``root/train/<wnid>/*`` and ``root/val/<wnid>/*`` (the validation
  images sorted into class folders, e.g. by the usual ``valprep.sh``). Option
  ``image_size`` (224).
"""
import os

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from trainer.errors import UserError

from .dataset import Dataset, FolderSplit, check_options

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TINY_STATS = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
TINY_FOLDER = "tiny-imagenet-200"


def _classes(name: str, train_dir: str) -> tuple[list[str], dict[str, int]]:
    try:
        return find_classes(train_dir)
    except FileNotFoundError as exc:
        raise UserError(f"dataset {name!r}: no class folders in {train_dir} ({exc})") from exc


def _walk(name: str, directory: str, class_to_idx: dict, allow_empty: bool = False) -> list:
    try:
        samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS,
                               allow_empty=allow_empty)
    except FileNotFoundError as exc:
        raise UserError(f"dataset {name!r}: {exc}".replace("\n", " ")) from exc
    if not samples:
        raise UserError(f"dataset {name!r}: no images ({', '.join(IMG_EXTENSIONS)}) under {directory}")
    return samples


def _val_folders(name: str, val_dir: str, class_to_idx: dict) -> list:
    """``val/<class>/...`` folders; every class must also be a training class."""
    val_classes, _ = _classes(name, val_dir)
    unknown = sorted(set(val_classes) - set(class_to_idx))
    if unknown:
        raise UserError(f"dataset {name!r}: class folders in {val_dir} that train/ lacks: "
                        f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return _walk(name, val_dir, class_to_idx, allow_empty=True)


def _val_annotations(name: str, val_dir: str, class_to_idx: dict) -> list:
    """Tiny-ImageNet's original layout: ``val/images/<file>`` labelled by ``val_annotations.txt``."""
    ann_path = os.path.join(val_dir, "val_annotations.txt")
    samples = []
    with open(ann_path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.strip().split("\t")
            if not fields or not fields[0]:
                continue
            if len(fields) < 2:
                raise UserError(f"{ann_path}:{lineno}: expected '<file>\\t<wnid>\\t...', got {line.strip()!r}")
            fname, wnid = fields[0], fields[1]
            if wnid not in class_to_idx:
                raise UserError(f"{ann_path}:{lineno}: class {wnid!r} has no folder in train/")
            path = os.path.join(val_dir, "images", fname)
            if not os.path.isfile(path):
                raise UserError(f"{ann_path}:{lineno}: image {path} not found")
            samples.append((path, class_to_idx[wnid]))
    if not samples:
        raise UserError(f"dataset {name!r}: {ann_path} lists no images")
    return samples


def _image_size(name: str, options: dict | None, default: int) -> int:
    size = check_options(name, options, {"image_size": default})["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"dataset {name!r}: image_size must be a positive integer, got {size!r}")
    return size


def _dataset(name, classes, train, test, size, stats) -> Dataset:
    return Dataset(name=name, num_classes=len(classes), sample_shape=(3, size, size),
                   train=FolderSplit([p for p, _ in train], [y for _, y in train], size),
                   test=FolderSplit([p for p, _ in test], [y for _, y in test], size),
                   mean=stats[0], std=stats[1], class_names=list(classes))


def load_tinyimagenet(root: str | None, options: dict | None = None) -> Dataset:
    name = "tinyimagenet"
    size = _image_size(name, options, 64)
    expected = (f"{TINY_FOLDER}/train/<wnid>/images/*.JPEG and either {TINY_FOLDER}/val/images/*.JPEG "
                f"with {TINY_FOLDER}/val/val_annotations.txt or {TINY_FOLDER}/val/<wnid>/*")
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding {expected}")
    places = [os.path.join(root, TINY_FOLDER), root]
    folder = next((p for p in places if os.path.isdir(os.path.join(p, "train"))
                   and os.path.isdir(os.path.join(p, "val"))), None)
    if folder is None:
        raise UserError(f"dataset {name!r}: expected train/ and val/ folders in one of: "
                        f"{', '.join(places)} (layout: {expected})")
    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    classes, class_to_idx = _classes(name, train_dir)
    train = _walk(name, train_dir, class_to_idx)
    if (os.path.isfile(os.path.join(val_dir, "val_annotations.txt"))
            and os.path.isdir(os.path.join(val_dir, "images"))):
        test = _val_annotations(name, val_dir, class_to_idx)
    else:
        test = _val_folders(name, val_dir, class_to_idx)
    return _dataset(name, classes, train, test, size, TINY_STATS)


def load_imagenet(root: str | None, options: dict | None = None) -> Dataset:
    name = "imagenet"
    size = _image_size(name, options, 224)
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding train/<wnid>/* "
                        f"and val/<wnid>/*")
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    missing = [d for d in (train_dir, val_dir) if not os.path.isdir(d)]
    if missing:
        raise UserError(f"dataset {name!r}: expected folders {train_dir}/<wnid>/* and "
                        f"{val_dir}/<wnid>/*; missing: {', '.join(missing)}")
    classes, class_to_idx = _classes(name, train_dir)
    train = _walk(name, train_dir, class_to_idx)
    test = _val_folders(name, val_dir, class_to_idx)
    return _dataset(name, classes, train, test, size, IMAGENET_STATS)
