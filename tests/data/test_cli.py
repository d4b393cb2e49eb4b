"""``sslpipe shard SOURCE ROOT --out DIR``, ``shard verify`` and ``shard info``."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
from click.testing import CliRunner

from sslpipe.cli import main
from sslpipe.data import read_manifest


def _mnist(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape)
            data = gzip.compress(header + array.tobytes())
            (root / f"{prefix}-{kind}-ubyte.gz").write_bytes(data)
    return root


def test_shard_verify_info_round_trip(tmp_path):
    root, out = _mnist(tmp_path), tmp_path / "m30"
    runner = CliRunner()
    result = runner.invoke(main, ["shard", "mnist", str(root), "--out", str(out), "--subset",
                                  "50%", "--shard-size", "8", "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["num_samples"] == 30 and len(manifest["shards"]) == 4
    assert manifest["subset"] == {"rule": "50%", "seed": 0, "size": 30, "replaced": []}
    assert runner.invoke(main, ["shard", "verify", str(out), "--decode"]).exit_code == 0
    info = runner.invoke(main, ["shard", "info", str(out)])
    assert info.exit_code == 0 and "30" in info.output and "3 - 3" in info.output

    again = runner.invoke(main, ["shard", "mnist", str(root), "--out", str(out), "--no-progress"])
    assert again.exit_code != 0 and "--overwrite" in again.output
    keys = tmp_path / "keys.txt"
    keys.write_text("train_000001\ntrain_000005\n")
    picked = runner.invoke(main, ["shard", "mnist", str(root), "--out", str(out), "--overwrite",
                                  "--keys-from", str(keys), "--no-progress", "-j", "1"])
    assert picked.exit_code == 0, picked.output
    assert read_manifest(out)["counts_per_class"]["5"] == 1


def test_bad_root_and_subset_fail_with_a_message(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["shard", "cifar10", str(tmp_path), "--out", str(tmp_path / "o")])
    assert bad.exit_code != 0 and "data_batch_1" in bad.output
    root = _mnist(tmp_path)
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
    big = runner.invoke(main, ["shard", "mnist", str(root), "--split", "test", "--subset", "1k",
                               "--out", str(tmp_path / "o")])
    assert big.exit_code != 0 and "only 20" in big.output
    split = runner.invoke(main, ["shard", "mnist", str(root), "--split", "val", "--out",
                                 str(tmp_path / "o")])
    assert split.exit_code != 0 and "`split` must be one of" in split.output


def test_photo_jpg_beside_photo_png_shards_both(tmp_path):
    from PIL import Image

    for name in ("a/photo.jpg", "a/photo.png", "b/tiny.jpg", "b/tiny.png", "b/other.jpg"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), len(name), np.uint8)).save(tmp_path / "src" / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["shard", "imagefolder", str(tmp_path / "src"), "--out",
                                       str(out), "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["num_samples"] == 5 and manifest["skipped"] == []
    assert CliRunner().invoke(main, ["shard", "verify", str(out), "--decode"]).exit_code == 0
