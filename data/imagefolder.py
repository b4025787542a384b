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

Both take a class subset, so ImageNet-100 is a config rather than a copy of the data:
``num_classes: N`` keeps the first N class folders in sorted order, ``classes: [wnid, ...]``
the folders named. Labels are 0..K-1 over the kept classes in sorted order; images of the
other classes (training and validation alike) are not read.
"""
import os

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from common.errors import UserError

from .dataset import Dataset, FolderSplit, check_dataset_dir, check_options

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TINY_STATS = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
TINY_FOLDER = "tiny-imagenet-200"


def _classes(name: str, train_dir: str) -> tuple[list[str], dict[str, int]]:
    try:
        return find_classes(train_dir)
    except FileNotFoundError as exc:
        raise UserError(f"dataset {name!r}: no class folders in {train_dir} ({exc})") from exc


def _walk(name: str, directory: str, class_to_idx: dict, some: bool = True) -> list:
    """(path, label) of the images under `directory`/<class>/ of the classes kept; with `some`,
    at least one (a class without any is for _both_splits to name)."""
    try:
        samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as exc:
        raise UserError(f"dataset {name!r}: {exc}".replace("\n", " ")) from exc
    if some and not samples:
        raise UserError(f"dataset {name!r}: no images ({', '.join(IMG_EXTENSIONS)}) under {directory}")
    return samples


def _both_splits(name: str, class_to_idx: dict, train: list, test: list, train_dir: str, val_where) -> None:
    """Every kept class has training and validation images: a class without validation images
    would leave its task scored on the other classes only, one without training images scored
    untaught. `val_where(class)` is where its validation images were looked for."""
    trained, validated = {y for _, y in train}, {y for _, y in test}
    for wnid, label in class_to_idx.items():
        if label not in validated or label not in trained:
            has, lacks = ("training", "validation") if label in trained else ("validation", "training")
            where = {"training": os.path.join(train_dir, wnid), "validation": val_where(wnid)}
            raise UserError(f"dataset {name!r}: class {wnid!r} has {has} images in {where[has]} but no {lacks} "
                            f"images in {where[lacks]}; every class needs both: add them, or keep only the "
                            f"classes that have both (--dataset-config classes)")


def _val_folders(name: str, val_dir: str, class_to_idx: dict, train_classes: list[str]) -> list:
    """``val/<class>/...`` folders of the kept classes; every class must also be a training class."""
    val_classes, _ = _classes(name, val_dir)
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        raise UserError(f"dataset {name!r}: class folders in {val_dir} that train/ lacks: "
                        f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return _walk(name, val_dir, class_to_idx, some=False)


def _val_annotations(name: str, val_dir: str, class_to_idx: dict, train_classes: list[str]) -> list:
    """Tiny-ImageNet's original layout: ``val/images/<file>`` labelled by ``val_annotations.txt``
    (lines of classes outside the kept subset are skipped)."""
    train_classes = set(train_classes)
    ann_path = os.path.join(val_dir, "val_annotations.txt")
    samples = []
    try:
        with open(ann_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except PermissionError:
        raise UserError(f"dataset {name!r}: {ann_path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset {name!r}: cannot read {ann_path}: {exc}") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.strip().split("\t")
        if not fields or not fields[0]:
            continue
        if len(fields) < 2:
            raise UserError(f"{ann_path}:{lineno}: expected '<file>\\t<wnid>\\t...', got {line.strip()!r}")
        fname, wnid = fields[0], fields[1]
        if wnid not in train_classes:
            raise UserError(f"{ann_path}:{lineno}: class {wnid!r} has no folder in train/")
        if wnid not in class_to_idx:
            continue
        path = os.path.join(val_dir, "images", fname)
        if not os.path.isfile(path):
            raise UserError(f"{ann_path}:{lineno}: image {path} not found")
        samples.append((path, class_to_idx[wnid]))
    return samples  # a kept class it lists no image of is for _both_splits to name


def _options(name: str, options: dict | None, default_size: int) -> dict:
    opts = check_options(name, options, {"image_size": default_size, "num_classes": None, "classes": None})
    size = opts["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"dataset {name!r}: image_size must be a positive integer, got {size!r}")
    return opts


def _subset(name: str, train_dir: str, classes: list[str], opts: dict) -> dict[str, int]:
    """class -> label for the classes kept: all, the first num_classes (sorted), or those named."""
    count, named = opts["num_classes"], opts["classes"]
    if count is not None and named is not None:
        raise UserError(f"dataset {name!r}: give num_classes or classes, not both")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(f"dataset {name!r}: num_classes must be a positive integer, got {count!r}")
        if count > len(classes):
            raise UserError(f"dataset {name!r}: num_classes {count} asked for, but {train_dir} holds "
                            f"{len(classes)} class folders")
        kept = classes[:count]
    elif named is not None:
        if (not isinstance(named, (list, tuple)) or not named
                or not all(isinstance(c, str) for c in named)):
            raise UserError(f"dataset {name!r}: classes must be a non-empty list of class folder names, "
                            f"got {named!r}")
        missing = [c for c in named if c not in set(classes)]
        if missing:
            raise UserError(f"dataset {name!r}: class {missing[0]!r} has no folder in {train_dir}"
                            f"{f' ({len(missing)} such classes)' if len(missing) > 1 else ''}; "
                            f"valid classes: {_some(classes)}")
        if len(set(named)) != len(named):
            raise UserError(f"dataset {name!r}: classes lists a class twice: {named!r}")
        kept = sorted(named)
    else:
        kept = classes
    return {c: i for i, c in enumerate(kept)}


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" ... ({len(names)} in all)" if len(names) > shown else "")


def _dataset(name, classes, train, test, size, stats) -> Dataset:
    return Dataset(name=name, num_classes=len(classes), sample_shape=(3, size, size),
                   train=FolderSplit([p for p, _ in train], [y for _, y in train], size),
                   test=FolderSplit([p for p, _ in test], [y for _, y in test], size),
                   mean=stats[0], std=stats[1], class_names=list(classes))


def load_tinyimagenet(root: str | None, options: dict | None = None) -> Dataset:
    name = "tinyimagenet"
    opts = _options(name, options, 64)
    expected = (f"{TINY_FOLDER}/train/<wnid>/images/*.JPEG and either {TINY_FOLDER}/val/images/*.JPEG "
                f"with {TINY_FOLDER}/val/val_annotations.txt or {TINY_FOLDER}/val/<wnid>/*")
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding {expected}")
    check_dataset_dir(name, root)
    places = [os.path.join(root, TINY_FOLDER), root]
    folder = next((p for p in places if os.path.isdir(os.path.join(p, "train"))
                   and os.path.isdir(os.path.join(p, "val"))), None)
    if folder is None:
        raise UserError(f"dataset {name!r}: expected train/ and val/ folders in one of: "
                        f"{', '.join(places)} (layout: {expected})")
    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    all_classes, _ = _classes(name, train_dir)
    class_to_idx = _subset(name, train_dir, all_classes, opts)
    train = _walk(name, train_dir, class_to_idx)
    ann_path = os.path.join(val_dir, "val_annotations.txt")
    if os.path.isfile(ann_path) and os.path.isdir(os.path.join(val_dir, "images")):
        test = _val_annotations(name, val_dir, class_to_idx, all_classes)
        _both_splits(name, class_to_idx, train, test, train_dir, lambda wnid: ann_path)
    else:
        test = _val_folders(name, val_dir, class_to_idx, all_classes)
        _both_splits(name, class_to_idx, train, test, train_dir, lambda wnid: os.path.join(val_dir, wnid))
    return _dataset(name, list(class_to_idx), train, test, opts["image_size"], TINY_STATS)


def load_imagenet(root: str | None, options: dict | None = None) -> Dataset:
    name = "imagenet"
    opts = _options(name, options, 224)
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding train/<wnid>/* "
                        f"and val/<wnid>/*")
    check_dataset_dir(name, root)
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    missing = [d for d in (train_dir, val_dir) if not os.path.isdir(d)]
    if missing:
        raise UserError(f"dataset {name!r}: expected folders {train_dir}/<wnid>/* and "
                        f"{val_dir}/<wnid>/*; missing: {', '.join(missing)}")
    all_classes, _ = _classes(name, train_dir)
    class_to_idx = _subset(name, train_dir, all_classes, opts)
    train = _walk(name, train_dir, class_to_idx)
    test = _val_folders(name, val_dir, class_to_idx, all_classes)
    _both_splits(name, class_to_idx, train, test, train_dir, lambda wnid: os.path.join(val_dir, wnid))
    return _dataset(name, list(class_to_idx), train, test, opts["image_size"], IMAGENET_STATS)
