"""Each source reader on a small tree in the dataset's true on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sslpipe.data import open_source
from sslpipe.data.sources.idx import read_idx


def _pixels(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_fashion_mnist(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    source = open_source("fashion-mnist", str(tmp_path), "test")
    assert len(source.records) == 12 and source.classes[9] == "Ankle boot"
    assert [r.label for r in source.records] == labels.tolist()
    np.testing.assert_array_equal(source.records[3].array, images[3])
    assert read_idx(str(tmp_path / f"t10k-labels-idx1-ubyte{suffix}")).shape == (12,)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        open_source("mnist", str(tmp_path), "train")


def test_cifar10_and_cifar100(tmp_path):
    images = _pixels(6, 32, 32)
    flat = images.transpose(0, 3, 1, 2).reshape(6, -1)  # R, G, B planes in turn
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        batch = {b"data": flat, b"labels": [i % 10] * 6}
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (base / "test_batch").write_bytes(pickle.dumps({b"data": flat[:2], b"labels": [3, 4]}))
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship",
             b"truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    train = open_source("cifar10", str(tmp_path), "train")
    assert len(train.records) == 30 and train.classes[3] == "cat"
    np.testing.assert_array_equal(train.records[7].array, images[1])
    assert open_source("cifar10", str(base), "test").records[1].label == 4

    base100 = tmp_path / "cifar-100-python"
    base100.mkdir()
    (base100 / "train").write_bytes(pickle.dumps({b"data": flat, b"fine_labels": [99] * 6}))
    (base100 / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c"] * 100}))
    source = open_source("cifar100", str(tmp_path), "train")
    assert len(source.classes) == 100 and source.records[0].label == 99


def test_stl10_binary_orientation_and_unlabeled(tmp_path):
    images = _pixels(3, 96, 96)
    images[0, :10, :, :] = 255  # a white band at the top of image 0
    base = tmp_path / "stl10_binary"
    base.mkdir()
    stored = images.transpose(0, 3, 2, 1)  # STL-10 stores C x W x H per image
    stored.tofile(base / "train_X.bin")
    np.array([1, 10, 5], np.uint8).tofile(base / "train_y.bin")
    stored.tofile(base / "unlabeled_X.bin")
    train = open_source("stl10", str(tmp_path), "train")
    assert [r.label for r in train.records] == [0, 9, 4]
    np.testing.assert_array_equal(train.records[0].array, images[0])
    assert (train.records[0].array[:10] == 255).all()
    unlabeled = open_source("stl10", str(tmp_path), "unlabeled")
    assert not unlabeled.labeled and {r.label for r in unlabeled.records} == {None}


def test_svhn_mat_label_ten_is_zero(tmp_path):
    from scipy.io import savemat

    images = _pixels(4, 32, 32)
    savemat(tmp_path / "test_32x32.mat",
            {"X": images.transpose(1, 2, 3, 0), "y": np.array([[10], [1], [9], [10]])})
    source = open_source("svhn", str(tmp_path), "test")
    assert [r.label for r in source.records] == [0, 1, 9, 0]
    np.testing.assert_array_equal(source.records[2].array, images[2])
    with pytest.raises(ValueError, match="train_32x32.mat is missing"):
        open_source("svhn", str(tmp_path), "train")


def test_flowers102(tmp_path):
    from scipy.io import savemat

    (tmp_path / "jpg").mkdir()
    for i in range(1, 7):
        Image.fromarray(_pixels(1, 20, 30, i)[0]).save(tmp_path / "jpg" / f"image_{i:05d}.jpg")
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 102, 1, 2, 3]])})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[4, 1]]), "valid": np.array([[2]]),
                                     "tstid": np.array([[3, 5, 6]])})
    train = open_source("flowers102", str(tmp_path), "train")
    assert [(r.key, r.label) for r in train.records] == [("image_00001", 0), ("image_00004", 0)]
    test = open_source("flowers102", str(tmp_path), "test")
    assert [r.label for r in test.records] == [101, 1, 2] and len(test.classes) == 102


def _jpeg(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(1, 24, 32, seed)[0]).save(path, "JPEG")


def test_imagenet_train_and_both_val_layouts(tmp_path):
    from scipy.io import savemat

    wnids = ["n01440764", "n02102040", "n01443537"]
    for c, wnid in enumerate(wnids):
        for i in range(2):
            _jpeg(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG", c * 10 + i)
    (tmp_path / "train" / wnids[0] / "notes.txt").write_text("x")
    train = open_source("imagenet", str(tmp_path), "train")
    assert train.classes == sorted(wnids) and len(train.records) == 6
    assert {r.key: r.label for r in train.records}["n02102040_1"] == 2
    assert train.skipped[0]["reason"] == "not an image file extension"

    # flat val + devkit ground truth (ILSVRC2012_IDs) + meta.mat
    for i in range(1, 4):
        _jpeg(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", i)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    synsets = np.array(
        [(1, "n02102040", "English springer", 0), (2, "n01440764", "tench, Tinca tinca", 0),
         (3, "n01443537", "goldfish", 0), (4, "n00000001", "animal", 3)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n3\n")
    val = open_source("imagenet", str(tmp_path), "val")
    assert val.classes == ["n01440764 tench", "n01443537 goldfish", "n02102040 English springer"]
    assert [r.label for r in val.records] == [0, 2, 1]

    # Kaggle solution CSV takes precedence and gives the same labels
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n02102040 1 2 3 4\nILSVRC2012_val_00000003,n01443537 0 0 1 1\n")
    assert [r.label for r in open_source("imagenet", str(tmp_path), "val").records] == [0, 2, 1]


def test_imagenet_wrong_layout_shows_expected(tmp_path):
    (tmp_path / "val").mkdir()
    _jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match=r"(?s)no ground truth.*LOC_val_solution.csv"):
        open_source("imagenet", str(tmp_path), "val")
    with pytest.raises(ValueError, match=r"(?s)'train' folder is missing.*n01440764"):
        open_source("imagenet", str(tmp_path), "train")
    with pytest.raises(ValueError, match="Did you mean imagenet"):
        open_source("imagenett", str(tmp_path))


def test_imagefolder_recursive_and_split(tmp_path):
    _jpeg(tmp_path / "train" / "dog" / "a" / "x.jpg")
    _jpeg(tmp_path / "train" / "cat" / "y.png")
    source = open_source("imagefolder", str(tmp_path), "train")
    assert source.classes == ["cat", "dog"]
    assert {r.key: r.label for r in source.records} == {"cat_y": 0, "dog_a_x": 1}
    with pytest.raises(ValueError, match="split folder 'val' is missing"):
        open_source("imagefolder", str(tmp_path), "val")


def test_imagefolder_keys_that_would_clash_stay_unique_and_keep_every_image(tmp_path):
    # one stem with two extensions, or two upper/lower-case ones; a path whose underscores
    # match another's folders; dots and underscores; names that differ only in case
    for rel in ("b/tiny.jpg", "b/tiny.png", "b/shot.JPG", "b/shot.jpg", "a/b_c.jpg",
                "a_b/c.jpg", "a/x.y.jpg", "a/x_y.jpg", "a/Photo.jpg", "a/photo.jpg",
                "a/tiny_jpg.png", "b/alone.jpg"):
        _jpeg(tmp_path / "root" / rel)
    root = tmp_path / "root"
    source = open_source("imagefolder", str(root))
    keys = {os.path.relpath(r.path, root): r.key for r in source.records}
    assert len(keys) == 12 and len({k.casefold() for k in keys.values()}) == 12
    assert keys["b/tiny.jpg"] == "b_tiny_jpg" and keys["b/tiny.png"] == "b_tiny_png"
    assert keys["b/alone.jpg"] == "b_alone"  # a key that clashes with none is unchanged
    assert keys["a/tiny_jpg.png"] == "a_tiny_jpg"
    assert all("." not in k and "/" not in k for k in keys.values())
    # the same names give the same keys (no dependence on order or machine)
    assert keys == {os.path.relpath(r.path, root): r.key
                    for r in open_source("imagefolder", str(root)).records}


def test_unique_keys_resolves_clashes_of_clashes():
    from sslpipe.data.sources.base import unique_keys

    # x.jpg / x.png clash; their keys with the extension clash with x_jpg.png's own key
    names = ["x.jpg", "x.png", "x_jpg.png", "X_JPG.gif"]
    keys = unique_keys(["x", "x", "x_jpg", "X_JPG"], names)
    assert len({k.casefold() for k in keys}) == 4 and keys[1] == "x_png"
    assert all(k.startswith(("x_jpg", "X_JPG_gif")) for k in keys[::2] + keys[3:])
    with pytest.raises(ValueError, match="listed twice"):
        unique_keys(["a", "a"], ["a.jpg", "a.jpg"])


def test_imagenet_same_file_name_in_two_subfolders_or_extensions(tmp_path):
    wnid = "n01440764"
    _jpeg(tmp_path / "train" / wnid / f"{wnid}_1.JPEG")
    _jpeg(tmp_path / "train" / wnid / "extra" / f"{wnid}_1.JPEG")
    _jpeg(tmp_path / "train" / wnid / f"{wnid}_2.JPEG")
    _jpeg(tmp_path / "train" / wnid / f"{wnid}_2.png")
    _jpeg(tmp_path / "train" / wnid / f"{wnid}_3.JPEG")
    keys = [r.key for r in open_source("imagenet", str(tmp_path), "train").records]
    assert len(keys) == 5 and set(keys) == {
        f"{wnid}_3", f"{wnid}_{wnid}_1_JPEG", f"{wnid}_{wnid}_2_JPEG", f"{wnid}_{wnid}_2_png",
        f"{wnid}_extra_{wnid}_1_JPEG"}


def test_flowers102_an_id_listed_twice_is_written_once_and_named(tmp_path):
    from scipy.io import savemat

    (tmp_path / "jpg").mkdir()
    for i in range(1, 4):
        Image.fromarray(_pixels(1, 20, 30, i)[0]).save(tmp_path / "jpg" / f"image_{i:05d}.jpg")
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 3]])})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[2, 1, 2]]), "valid": np.array([[3]]),
                                     "tstid": np.array([[3]])})
    train = open_source("flowers102", str(tmp_path), "train")
    assert [r.key for r in train.records] == ["image_00001", "image_00002"]
    assert len(train.skipped) == 1 and "listed 2 times" in train.skipped[0]["reason"]
