"""data/: every on-disk format read back from small files written here in that format,
digits and synthetic, scenarios, sharding and batch loading."""
import dataclasses
import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError
from data import DATASETS, ArraySplit, build_tasks, load_dataset, make_loader, shard_epoch, shard_eval
from data.checks import check_tasks

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- writers of the real formats

def write_idx(path, array: np.ndarray, gz: bool = False):
    """IDX: 0, 0, type code (0x08 = uint8), ndim; dims as big-endian uint32; the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def make_mnist(folder, gz, rng, n_train=30, n_test=10):
    os.makedirs(folder, exist_ok=True)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: np.arange(n_train, dtype=np.uint8) % 10,
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for i, (name, arr) in enumerate(arrays.items()):
        write_idx(os.path.join(folder, name), arr, gz=gz if isinstance(gz, bool) else gz[i])
    return arrays


def dump_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_batch(rng, labels, label_key):
    """A CIFAR batch as the original python-2 pickles load: bytes keys, uint8 (n, 3072)."""
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return {b"batch_label": b"x", label_key: list(map(int, labels)), b"data": data,
            b"filenames": [b"f.png"] * len(labels)}


def save_image(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


# ---------------------------------------------------------------- registry and errors

def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as err:
        load_dataset("svhn", None)
    for name in DATASETS:
        assert name in str(err.value)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(UserError, match="valid options: classes, image_size, num_classes"):
        load_dataset("imagenet", "/nowhere", {"resize": 3})
    with pytest.raises(UserError, match="digits.*valid options: none"):
        load_dataset("digits", None, {"x": 1})


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100",
                                  "tinyimagenet", "imagenet"])
def test_file_datasets_need_a_root(name):
    with pytest.raises(UserError, match="--dataset-dir"):
        load_dataset(name, None)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)

@pytest.mark.parametrize("name,sub,gz", [
    ("mnist", "", False),
    ("mnist", "MNIST/raw", True),
    ("fashion_mnist", "FashionMNIST/raw", (True, False, False, True)),
])
def test_idx_round_trip(tmp_path, name, sub, gz):
    arrays = make_mnist(tmp_path / sub, gz, np.random.default_rng(0))
    ds = load_dataset(name, str(tmp_path))
    assert ds.num_classes == 10 and ds.sample_shape == (1, 28, 28) and len(ds.mean) == 1
    assert len(ds.train) == 30 and len(ds.test) == 10
    x, y = ds.train.take(np.arange(30))
    assert x.dtype == torch.uint8 and x.shape == (30, 1, 28, 28) and y.dtype == torch.int64
    assert np.array_equal(x[:, 0].numpy(), arrays[IDX_NAMES[0]])
    assert np.array_equal(y.numpy(), arrays[IDX_NAMES[1]])
    x, y = ds.test.take([3, 1])
    assert np.array_equal(x[:, 0].numpy(), arrays[IDX_NAMES[2]][[3, 1]])
    assert y.tolist() == [9, 3]
    assert ds.train.targets.dtype == np.int64


def test_idx_missing_files_names_them_and_all_places(tmp_path):
    make_mnist(tmp_path / "MNIST" / "raw", False, np.random.default_rng(0))
    os.remove(tmp_path / "MNIST" / "raw" / IDX_NAMES[3])
    with pytest.raises(UserError) as err:
        load_dataset("mnist", str(tmp_path))
    msg = str(err.value)
    assert all(n in msg for n in IDX_NAMES) and ".gz" in msg
    assert str(tmp_path) in msg and os.path.join(str(tmp_path), "MNIST", "raw") in msg
    with pytest.raises(UserError, match="FashionMNIST"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_idx_bad_header_is_rejected(tmp_path):
    make_mnist(tmp_path, False, np.random.default_rng(0))
    with open(tmp_path / IDX_NAMES[0], "r+b") as f:  # wrong magic
        f.write(bytes([8, 1, 0x08, 3]))
    with pytest.raises(UserError, match="magic"):
        load_dataset("mnist", str(tmp_path))
    make_mnist(tmp_path, False, np.random.default_rng(0))
    with open(tmp_path / IDX_NAMES[2], "ab") as f:  # data longer than the dims say
        f.write(b"\0" * 5)
    with pytest.raises(UserError, match="dims"):
        load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 pickles

def test_cifar10_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [cifar_batch(rng, np.tile(np.arange(10), 2), b"labels") for _ in range(5)]
    for i, batch in enumerate(batches, 1):
        dump_pickle(folder / f"data_batch_{i}", batch)
    test = cifar_batch(rng, np.arange(10)[::-1], b"labels")
    dump_pickle(folder / "test_batch", test)
    dump_pickle(folder / "batches.meta", {b"label_names": [b"airplane"] + [b"c"] * 9})
    for root in (tmp_path, folder):  # the parent folder or the batches folder itself
        ds = load_dataset("cifar10", str(root))
        assert ds.num_classes == 10 and ds.sample_shape == (3, 32, 32)
        assert len(ds.train) == 100 and len(ds.test) == 10 and ds.class_names[0] == "airplane"
        x, y = ds.train.take(np.arange(100))
        assert x.dtype == torch.uint8 and x.shape == (100, 3, 32, 32)
        assert np.array_equal(x.reshape(100, 3072).numpy(), np.concatenate([b[b"data"] for b in batches]))
        assert np.array_equal(y.numpy(), np.tile(np.arange(10), 10))
        x, y = ds.test.take([0])
        assert np.array_equal(x.reshape(1, 3072).numpy(), test[b"data"][:1]) and y.tolist() == [9]
        # channel-major layout: the first 1024 bytes are the red plane
        assert np.array_equal(x[0, 0].numpy().ravel(), test[b"data"][0, :1024])


def test_cifar100_round_trip_and_missing(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = cifar_batch(rng, np.repeat(np.arange(100), 2), b"fine_labels")
    train[b"coarse_labels"] = [0] * 200
    dump_pickle(folder / "train", train)
    with pytest.raises(UserError) as err:
        load_dataset("cifar100", str(tmp_path))
    assert "train, test" in str(err.value) and str(folder) in str(err.value)
    test = cifar_batch(rng, np.arange(100), b"fine_labels")
    dump_pickle(folder / "test", test)
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.num_classes == 100 and len(ds.train) == 200 and ds.class_names is None
    x, y = ds.train.take([5, 199])
    assert np.array_equal(x.reshape(2, 3072).numpy(), train[b"data"][[5, 199]]) and y.tolist() == [2, 99]


# ---------------------------------------------------------------- image folders

WNIDS = ["n01443537", "n01629819", "n02058221"]


def make_tiny(root, val_layout, rng):
    base = root / "tiny-imagenet-200"
    for k, wnid in enumerate(WNIDS):
        for j in range(2):
            save_image(str(base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG"),
                       np.full((64, 64, 3), 40 * k + 10 * j, dtype=np.uint8))
    if val_layout == "annotations":
        lines = []
        for j, k in enumerate([2, 0, 1, 2]):
            save_image(str(base / "val" / "images" / f"val_{j}.JPEG"),
                       rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            lines.append(f"val_{j}.JPEG\t{WNIDS[k]}\t0\t0\t63\t63\n")
        (base / "val" / "val_annotations.txt").write_text("".join(lines))
    else:
        for k in (0, 2, 1):
            save_image(str(base / "val" / WNIDS[k] / f"v{k}.JPEG"), np.zeros((64, 64, 3), np.uint8))
    (base / "test" / "images").mkdir(parents=True)  # unlabelled, ignored


@pytest.mark.parametrize("val_layout", ["annotations", "folders"])
def test_tinyimagenet_both_val_layouts(tmp_path, val_layout):
    make_tiny(tmp_path, val_layout, np.random.default_rng(3))
    ds = load_dataset("tinyimagenet", str(tmp_path))
    assert ds.num_classes == 3 and ds.sample_shape == (3, 64, 64) and ds.class_names == WNIDS
    assert ds.train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    x, y = ds.train.take(np.arange(6))
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 64, 64)
    means = x.float().mean(dim=(1, 2, 3)).numpy()
    assert np.allclose(means, [0, 10, 40, 50, 80, 90], atol=2)  # JPEG is lossy
    expected = [2, 0, 1, 2] if val_layout == "annotations" else [0, 1, 2]
    assert ds.test.targets.tolist() == expected
    assert ds.test.take([0])[0].shape == (1, 3, 64, 64)
    small = load_dataset("tinyimagenet", str(tmp_path / "tiny-imagenet-200"), {"image_size": 32})
    assert small.sample_shape == (3, 32, 32) and small.train.take([5])[0].shape == (1, 3, 32, 32)


def test_tinyimagenet_bad_annotation_and_missing(tmp_path):
    with pytest.raises(UserError, match="train/ and val/"):
        load_dataset("tinyimagenet", str(tmp_path))
    make_tiny(tmp_path, "annotations", np.random.default_rng(4))
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="n99999999"):
        load_dataset("tinyimagenet", str(tmp_path))


def test_imagenet_folders_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    exact = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save_image(str(tmp_path / "train" / "n02" / "a.png"), exact)
    save_image(str(tmp_path / "train" / "n02" / "b.JPEG"), np.full((30, 40, 3), 200, np.uint8))
    save_image(str(tmp_path / "train" / "n01" / "sub" / "c.png"), np.full((40, 24), 77, np.uint8))  # grey
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    save_image(str(tmp_path / "val" / "n02" / "v.png"), exact)
    save_image(str(tmp_path / "val" / "n01" / "v.png"), np.zeros((16, 16, 3), np.uint8))
    ds = load_dataset("imagenet", str(tmp_path), {"image_size": 16})
    assert ds.num_classes == 2 and ds.class_names == ["n01", "n02"] and ds.sample_shape == (3, 16, 16)
    assert ds.train.targets.tolist() == [0, 1, 1] and ds.test.targets.tolist() == [0, 1]
    x, y = ds.train.take([1, 0, 2])
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [1, 0, 1]
    assert np.array_equal(x[0].numpy(), exact.transpose(2, 0, 1))  # PNG at its own size: exact
    assert (x[1] == 77).all()  # grey becomes RGB
    assert (x[2].int() - 200).abs().max() <= 2  # resized and centre-cropped
    assert np.array_equal(ds.test.take([1])[0][0].numpy(), exact.transpose(2, 0, 1))
    # decoded in DataLoader workers: the split pickles and batches come back in order
    batches = list(make_loader(ds.train, np.array([2, 1, 0]), 2, workers=1))
    assert [b[1].tolist() for b in batches] == [[1, 1], [0]]


def test_imagenet_missing_val_and_unknown_val_class(tmp_path):
    save_image(str(tmp_path / "train" / "n01" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError) as err:
        load_dataset("imagenet", str(tmp_path))
    assert str(tmp_path / "val") in str(err.value)
    save_image(str(tmp_path / "val" / "n05" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="n05"):
        load_dataset("imagenet", str(tmp_path))


BOTH = "; every class needs both: add them, or keep only the classes that have both (--dataset-config classes)"


def two_imagenet_classes(root, val_n01="image"):
    """train/n01, train/n02 and val/n02 with an image each; val/n01 as `val_n01` says: an image,
    an empty folder, a folder of non-images, or missing."""
    for split, wnid in (("train", "n01"), ("train", "n02"), ("val", "n02")):
        save_image(str(root / split / wnid / "a.png"), np.zeros((8, 8, 3), np.uint8))
    if val_n01 == "image":
        save_image(str(root / "val" / "n01" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    elif val_n01 == "empty":
        (root / "val" / "n01").mkdir()
    elif val_n01 == "text":
        (root / "val" / "n01").mkdir()
        (root / "val" / "n01" / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("val_n01", ["missing", "empty", "text"])
def test_imagenet_class_without_validation_images_is_refused(tmp_path, val_n01):
    two_imagenet_classes(tmp_path, val_n01)
    with pytest.raises(UserError) as refused:
        load_dataset("imagenet", str(tmp_path), {"image_size": 8})
    assert str(refused.value) == (f"dataset 'imagenet': class 'n01' has training images in {tmp_path}/train/n01 "
                                  f"but no validation images in {tmp_path}/val/n01{BOTH}")


def test_imagenet_class_without_training_images_is_refused(tmp_path):
    two_imagenet_classes(tmp_path)
    os.remove(tmp_path / "train" / "n01" / "a.png")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError) as refused:
        load_dataset("imagenet", str(tmp_path), {"image_size": 8})
    assert str(refused.value) == (f"dataset 'imagenet': class 'n01' has validation images in {tmp_path}/val/n01 "
                                  f"but no training images in {tmp_path}/train/n01{BOTH}")


@pytest.mark.parametrize("val_layout", ["annotations", "folders"])
def test_tinyimagenet_class_without_validation_images_is_refused(tmp_path, val_layout):
    make_tiny(tmp_path, val_layout, np.random.default_rng(0))
    val = tmp_path / "tiny-imagenet-200" / "val"
    if val_layout == "annotations":
        ann = val / "val_annotations.txt"
        ann.write_text("".join(line + "\n" for line in ann.read_text().splitlines() if WNIDS[1] not in line))
        where = ann
    else:
        where = val / WNIDS[1]
        for image in where.iterdir():
            image.unlink()
    with pytest.raises(UserError) as refused:
        load_dataset("tinyimagenet", str(tmp_path))
    train = tmp_path / "tiny-imagenet-200" / "train" / WNIDS[1]
    assert str(refused.value) == (f"dataset 'tinyimagenet': class {WNIDS[1]!r} has training images in {train} "
                                  f"but no validation images in {where}{BOTH}")


# ---------------------------------------------------------------- digits and synthetic

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None)


def test_digits(digits):
    assert digits.num_classes == 10 and digits.sample_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.test) == 1797 and len(digits.test) == 450
    x, y = digits.train.take(np.arange(len(digits.train)))
    assert x.dtype == torch.uint8 and x.shape == (1347, 1, 8, 8) and int(x.max()) == 255
    assert set(np.unique(x.numpy())) <= {round(v * 255 / 16) for v in range(17)}
    counts = np.bincount(digits.test.targets, minlength=10)
    whole = counts + np.bincount(digits.train.targets, minlength=10)
    assert np.all(np.abs(counts - whole * 0.25) <= 1)  # stratified
    again = load_dataset("digits", None)
    assert np.array_equal(again.test.targets, digits.test.targets)
    assert torch.equal(again.test.take([0, 7])[0], digits.test.take([0, 7])[0])
    assert 0 < digits.mean[0] < 1 and 0 < digits.std[0] < 1


def test_synthetic():
    opts = {"num_classes": 4, "shape": [2, 12, 10], "train_size": 40, "test_size": 8, "seed": 3}
    ds = load_dataset("synthetic", None, opts)
    assert ds.num_classes == 4 and ds.sample_shape == (2, 12, 10) and len(ds.test) == 8
    assert np.array_equal(np.bincount(ds.train.targets), [10] * 4)
    x, y = ds.train.take(np.arange(40))
    assert x.dtype == torch.uint8 and x.shape == (40, 2, 12, 10)
    assert torch.equal(ds.train.take([7])[0][0], x[7])  # same sample in any batch
    assert torch.equal(load_dataset("synthetic", None, opts).train.take(np.arange(40))[0], x)
    class_means = torch.stack([x[y == k].float().mean(0) for k in range(4)])
    assert (class_means[0] - class_means[1]).abs().mean() > 10  # class-dependent
    assert not torch.equal(ds.test.take([0])[0], ds.train.take([0])[0])
    with pytest.raises(UserError, match="shape"):
        load_dataset("synthetic", None, {"shape": [3, 32]})
    with pytest.raises(UserError, match="valid options"):
        load_dataset("synthetic", None, {"classes": 3})



def test_synthetic_in_memory_serves_the_same_samples():
    opts = {"num_classes": 3, "shape": [3, 6, 5], "train_size": 12, "test_size": 4, "seed": 1}
    lazy, held = load_dataset("synthetic", None, opts), load_dataset("synthetic", None, {**opts, "in_memory": True})
    for a, b in ((lazy.train, held.train), (lazy.test, held.test)):
        assert all(torch.equal(u, v) for u, v in zip(a.take([3, 0, 2]), b.take([3, 0, 2])))
    assert held.mean == pytest.approx(lazy.mean)
    with pytest.raises(UserError, match="in_memory must be true or false"):
        load_dataset("synthetic", None, {**opts, "in_memory": "yes"})


# ---------------------------------------------------------------- scenarios

def test_class_scenario_increments(digits):
    tasks = build_tasks(digits, {"initial_increment": 4, "increment": 3}, seed=0)
    assert [t.classes for t in tasks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for t in tasks:
        assert t.train_indices.dtype == np.int64 and t.test_indices.dtype == np.int64
        assert set(digits.train.targets[t.train_indices]) == set(t.classes)
        assert set(digits.test.targets[t.test_indices]) == set(t.classes)
    assert sum(len(t.train_indices) for t in tasks) == len(digits.train)
    assert sum(len(t.test_indices) for t in tasks) == len(digits.test)
    assert [t.classes for t in build_tasks(digits, None)] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_class_order_and_concatenation(digits):
    order = [9, 3, 5, 0, 1, 2, 4, 6, 7, 8]
    tasks = build_tasks(digits, {"initial_increment": 3, "increment": 7, "class_order": order,
                                 "concatenate_tasksets": True})
    assert [t.classes for t in tasks] == [[3, 5, 9], [0, 1, 2, 4, 6, 7, 8]]
    assert set(digits.train.targets[tasks[1].train_indices]) == set(range(10))  # union of 0..1
    assert len(tasks[1].train_indices) == len(digits.train)
    assert set(digits.test.targets[tasks[1].test_indices]) == set(tasks[1].classes)  # own part only
    random = [t.classes for t in build_tasks(digits, {"class_order": "random"}, seed=1)]
    assert random == [t.classes for t in build_tasks(digits, {"class_order": "random"}, seed=1)]
    assert sorted(sum(random, [])) == list(range(10))


def test_domain_scenario(digits):
    for kind in ("domain", "instance"):
        tasks = build_tasks(digits, {"scenario": kind, "num_tasks": 3}, seed=0)
        assert len(tasks) == 3
        train = [t.train_indices for t in tasks]
        assert len(np.unique(np.concatenate(train))) == len(digits.train)  # disjoint, all covered
        assert max(map(len, train)) - min(map(len, train)) <= 10  # each class cut to within one
        for t in tasks:
            assert t.classes == list(range(10))
            assert set(digits.test.targets[t.test_indices]) == set(range(10))
        assert len(np.unique(np.concatenate([t.test_indices for t in tasks]))) == len(digits.test)
    cat = build_tasks(digits, {"scenario": "domain", "num_tasks": 3, "concatenate_tasksets": True}, 0)
    assert np.array_equal(cat[1].train_indices, np.sort(np.concatenate(train[:2])))
    assert np.array_equal(cat[2].test_indices, tasks[2].test_indices)
    other = build_tasks(digits, {"scenario": "domain", "num_tasks": 3}, seed=1)
    assert not np.array_equal(other[0].train_indices, tasks[0].train_indices)
    joint = build_tasks(digits, {"scenario": "joint"})
    assert len(joint) == 1 and len(joint[0].train_indices) == len(digits.train)


def without_test_samples(dataset, label: int, keep: int = 0):
    """`dataset` with all but `keep` of the test samples of class `label` left out."""
    targets = dataset.test.targets
    rows = np.concatenate([np.flatnonzero(targets != label), np.flatnonzero(targets == label)[:keep]])
    x, y = dataset.test.take(np.sort(rows))
    return dataclasses.replace(dataset, test=ArraySplit(x.numpy(), y.numpy()))


def test_a_class_with_training_but_no_test_samples_is_refused(digits):
    partial = without_test_samples(digits, 3)
    with pytest.raises(UserError) as refused:
        check_tasks(partial, build_tasks(partial))
    assert str(refused.value).startswith("class 3 has training samples but no test samples in dataset 'digits'; ")
    untaught = dataclasses.replace(digits, train=partial.test, test=digits.train)  # the reverse
    with pytest.raises(UserError, match="class 3 has test samples but no training samples in dataset 'digits'"):
        check_tasks(untaught, build_tasks(digits, {"scenario": "joint"}))
    check_tasks(digits, build_tasks(digits))  # every class in both: accepted


def test_a_domain_task_without_test_samples_of_a_class_is_refused(digits):
    few = without_test_samples(digits, 9, keep=2)  # two test samples of class 9 for three tasks
    with pytest.raises(UserError) as refused:
        check_tasks(few, build_tasks(few, {"scenario": "domain", "num_tasks": 3}))
    assert str(refused.value).startswith("task 3 has training samples of class 9 but no test samples of it")
    check_tasks(few, build_tasks(few, {"scenario": "domain", "num_tasks": 2}))


@pytest.mark.parametrize("config,match", [
    ({"scenaro": "class"}, "valid keys: scenario"),
    ({"scenario": "task"}, "valid scenarios: class, domain, instance"),
    ({"increment": 3}, "divisible"),
    ({"increment": 0}, "increment must be an integer >= 1"),
    ({"class_order": [0, 1, 2]}, "permutation"),
    ({"concatenate_tasksets": "yes"}, "true or false"),
    ({"scenario": "domain", "num_tasks": 1000}, "fewer tasks"),
])
def test_bad_scenario_config(digits, config, match):
    with pytest.raises(UserError, match=match):
        build_tasks(digits, config)


# ---------------------------------------------------------------- sharding and loading

def test_shard_epoch():
    indices = np.arange(100, 203)  # 103 samples
    world = 4
    parts = [shard_epoch(indices, r, world, seed=7, epoch=0) for r in range(world)]
    assert all(len(p) == 25 for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == 100 and set(joined) <= set(indices)  # disjoint, all but < world
    assert np.array_equal(parts[2], shard_epoch(indices, 2, world, seed=7, epoch=0))  # same everywhere
    assert not np.array_equal(parts[0], shard_epoch(indices, 0, world, seed=7, epoch=1))
    assert not np.array_equal(parts[0], shard_epoch(indices, 0, world, seed=8, epoch=0))
    assert np.array_equal(np.sort(shard_epoch(indices, 0, 1, 0, 0)), indices)
    with pytest.raises(ValueError):
        shard_epoch(indices, 4, 4, 0, 0)


def test_shard_eval():
    indices = np.arange(10)
    parts = [shard_eval(indices, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert np.array_equal(np.concatenate(parts), indices)
    assert len(shard_eval(np.arange(2), 2, 3)) == 0


def test_make_loader(digits):
    indices = np.array([5, 3, 9, 1, 0, 2, 8])
    batches = list(make_loader(digits.train, indices, 3, workers=0))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.uint8 and torch.equal(x, digits.train.take(indices)[0])
    assert len(list(make_loader(digits.train, indices, 3, drop_last=True))) == 2
    assert len(make_loader(digits.train, indices, 3)) == 3
    pooled = list(make_loader(digits.train, indices, 2, workers=2))
    assert torch.equal(torch.cat([y for _, y in pooled]), torch.from_numpy(digits.train.targets[indices]))
