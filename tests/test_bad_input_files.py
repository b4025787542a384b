"""Bad files and settings found before a run starts: one line, exit 2, no traceback, nothing written."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, mpi_env
from test_data import cifar_batch, dump_pickle, make_tiny, save_image

TWO_TASKS = ["--tasksets-config", "{'initial_increment': 1, 'increment': 1}", "--model", "mnistnet",
             "--epochs", "1", "--dataset-config", "{'image_size': 16}"]


def imagenet(root, val_classes=("n01", "n02")):
    rng = np.random.default_rng(0)
    for wnid in ("n01", "n02"):
        for j in range(3):
            save_image(str(root / "train" / wnid / f"{j}.JPEG"), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    for wnid in val_classes:
        save_image(str(root / "val" / wnid / "v.JPEG"), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    return root


def preset(tmp_path, body):
    path = tmp_path / "presets.yaml"
    path.write_text(f"p:\n  {body}\n")
    return ["--yaml-config", str(path), "--config", "p"]


def corrupt_image(tmp_path):
    root = imagenet(tmp_path / "inet")
    (root / "train" / "n02" / "1.JPEG").write_bytes(b"\xff\xd8\xff not really a jpeg" * 8)
    return ["--dataset", "imagenet", "--dataset-dir", str(root), *TWO_TASKS]


def truncated_image(tmp_path):
    root = imagenet(tmp_path / "inet")
    path = root / "val" / "n01" / "v.JPEG"
    path.write_bytes(path.read_bytes()[:200])
    return ["--dataset", "imagenet", "--dataset-dir", str(root), *TWO_TASKS, "--workers", "2"]


def cifar_labels(value):
    def build(tmp_path):
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = cifar_batch(rng, [0, 1, 2], b"labels")
            batch[b"labels"] = value
            dump_pickle(folder / name, batch)
        return ["--dataset", "cifar10", "--dataset-dir", str(tmp_path)]
    return build


def tiny_annotations(tmp_path):
    make_tiny(tmp_path, "annotations", np.random.default_rng(0))
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_bytes(b"\xff\xfe\x00bad\x81")
    return ["--dataset", "tinyimagenet", "--dataset-dir", str(tmp_path)]


def results_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return ["--results-dir", str(tmp_path / "afile" / "results")]


CASES = {
    "null in config.yaml": (lambda t: preset(t, "epochs: null"), "epochs in preset 'p' of"),
    "float for an integer in YAML": (lambda t: preset(t, "epochs: 2.9"), "must be an integer, got 2.9"),
    "boolean for an integer in YAML": (lambda t: preset(t, "batch_size: true"), "must be an integer, got True"),
    "--yaml-config naming a folder": (lambda t: ["--yaml-config", str(t), "--config", "p"], "is a folder, not a file"),
    "CIFAR labels that are strings": (cifar_labels(["a", "b", "c"]), "'labels' must be integer class indices"),
    "CIFAR labels that are None": (cifar_labels(None), "'labels' must be integer class indices"),
    "unreadable Tiny-ImageNet annotations": (tiny_annotations, "cannot read"),
    "results folder under a file": (results_under_a_file, "is a file, not a folder"),
    "a corrupt image in an image folder": (corrupt_image, "unreadable image files in dataset 'imagenet': "),
    "a truncated image, with workers": (truncated_image, "v.JPEG: OSError"),
    "a class without validation images": (  # task 2's class n02: refused by name, before any task is built
        lambda t: ["--dataset", "imagenet", "--dataset-dir", str(imagenet(t / "inet", ("n01",))), *TWO_TASKS],
        "class 'n02' has training images in "),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_or_setting_is_one_line_and_writes_nothing(tmp_path, name):
    build, message = CASES[name]
    argv = build(tmp_path)
    results = tmp_path / "results"
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(results)]
    proc = subprocess.run([sys.executable, "main.py", *argv], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=180)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("main.py: error: "), proc.stderr[-3000:]
    assert message in lines[0], lines[0]
    assert not results.exists()
    if "corrupt" in name:
        assert os.path.join("train", "n02", "1.JPEG") in lines[0]
