"""Class subsets of image-folder datasets (ImageNet-100 as a config): the right folders, labels
and validation images; bad subsets are one clear line with nothing written."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.errors import UserError
from conftest import REPO, mpi_env
from data import load_dataset
from test_data import WNIDS, make_tiny, save_image

CLASSES = ["n04", "n01", "n03", "n02", "n05"]  # written in this (unsorted) order


def make_imagenet(root):
    for k, wnid in enumerate(CLASSES):
        for j in range(2):
            save_image(str(root / "train" / wnid / f"{j}.png"), np.full((8, 8, 3), 10 * k + j, np.uint8))
        save_image(str(root / "val" / wnid / "v.png"), np.full((8, 8, 3), 10 * k + 5, np.uint8))


def test_num_classes_takes_the_first_folders_in_sorted_order(tmp_path):
    make_imagenet(tmp_path)
    ds = load_dataset("imagenet", str(tmp_path), {"image_size": 8, "num_classes": 3})
    assert ds.num_classes == 3 and ds.class_names == ["n01", "n02", "n03"]
    assert ds.train.targets.tolist() == [0, 0, 1, 1, 2, 2] and ds.test.targets.tolist() == [0, 1, 2]
    x, _ = ds.train.take(np.arange(6))
    k = [CLASSES.index(c) for c in ("n01", "n02", "n03")]  # pixel value 10 k + j tells the folder
    assert x[:, 0, 0, 0].tolist() == [10 * k[0], 10 * k[0] + 1, 10 * k[1], 10 * k[1] + 1, 10 * k[2], 10 * k[2] + 1]
    assert ds.test.take([2])[0][0, 0, 0, 0].item() == 10 * k[2] + 5


def test_named_classes_in_sorted_label_order(tmp_path):
    make_imagenet(tmp_path)
    ds = load_dataset("imagenet", str(tmp_path), {"image_size": 8, "classes": ["n05", "n02"]})
    assert ds.class_names == ["n02", "n05"] and ds.num_classes == 2
    assert len(ds.train) == 4 and ds.test.targets.tolist() == [0, 1]
    assert ds.train.take([3])[0][0, 0, 0, 0].item() == 10 * CLASSES.index("n05") + 1


@pytest.mark.parametrize("val_layout", ["annotations", "folders"])
def test_tinyimagenet_subset_keeps_only_its_validation_images(tmp_path, val_layout):
    make_tiny(tmp_path, val_layout, np.random.default_rng(0))
    ds = load_dataset("tinyimagenet", str(tmp_path), {"classes": [WNIDS[2]]})
    assert ds.class_names == [WNIDS[2]] and ds.train.targets.tolist() == [0, 0]
    assert ds.test.targets.tolist() == ([0, 0] if val_layout == "annotations" else [0])


@pytest.mark.parametrize("options, message", [
    ({"num_classes": 6}, "num_classes 6 asked for, but"),
    ({"classes": ["n01", "n09"]}, "class 'n09' has no folder in"),
    ({"classes": ["n01", "n01"]}, "lists a class twice"),
    ({"num_classes": 2, "classes": ["n01"]}, "give num_classes or classes, not both"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"classes": "n01"}, "classes must be a non-empty list"),
])
def test_bad_subsets_are_user_errors(tmp_path, options, message):
    make_imagenet(tmp_path)
    with pytest.raises(UserError, match=message):
        load_dataset("imagenet", str(tmp_path), options)


def refused_subset(tmp_path, classes: list) -> str:
    """main.py on the subset `classes` of tmp_path/data: its one error line (exit 2, nothing written)."""
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "main.py", "--dataset", "imagenet", "--dataset-dir", str(tmp_path / "data"),
                           "--dataset-config", f"{{'image_size': 8, 'classes': {classes!r}}}",
                           "--results-dir", str(results)],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert not results.exists() or not any(results.iterdir())
    return lines[0]


def test_missing_class_from_the_command_line_writes_nothing(tmp_path):
    make_imagenet(tmp_path / "data")
    lines = [refused_subset(tmp_path, ["n01", "n77"])]
    assert lines[0].startswith("main.py: error: ") and "class 'n77' has no folder" in lines[0]
    assert "valid classes: n01, n02, n03, n04, n05" in lines[0]


def test_subset_class_missing_from_validation_is_one_line_exit_2_nothing_written(tmp_path):
    """A kept class with no validation images would leave its task scored on the other class only."""
    make_imagenet(tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "val" / "n03")
    lines = [refused_subset(tmp_path, ["n01", "n03"])]
    assert lines[0].startswith(f"main.py: error: dataset 'imagenet': class 'n03' has training images in "
                               f"{tmp_path / 'data' / 'train' / 'n03'} but no validation images in "
                               f"{tmp_path / 'data' / 'val' / 'n03'}; "), lines[0]
