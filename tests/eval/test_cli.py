"""`sslpipe eval` and `sslpipe report` end to end on tiny shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image

from sslpipe.cli import main


def _write_shards(root, name: str, n: int, seed: int, drop_last: int = 0) -> str:
    """A shard directory of ``n`` 28 px grayscale PNGs in 2 classes (dark / bright)."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    tar_path = root / f"{name}-000000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i in range(n - drop_last):
            label = i % 2
            pixels = rng.integers(0, 100, (28, 28)) + 150 * label
            png = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8), "L").save(png, format="PNG")
            for ext, data in (("png", png.getvalue()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    manifest = {
        "format": "sslpipe-shards", "version": 1, "name": name, "source": "toy", "root": "",
        "split": name, "classes": ["dark", "bright"], "labeled": True, "num_samples": n,
        "image_format": "png", "counts_per_class": {"0": n // 2, "1": n - n // 2},
        "shards": [{"file": tar_path.name, "index_file": f"{name}-000000.idx", "samples": n,
                    "bytes": tar_path.stat().st_size, "sha256": ""}],
        "skipped": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    return (_write_shards(base / "train", "train", 24, 0), _write_shards(base / "test", "test",
                                                                         10, 1))


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_linear_random_then_report(data, tmp_path) -> None:
    train, test = data
    out = tmp_path / "evals"
    args = ["eval", "linear", "--checkpoint", "random", "--arch", "resnet18", "--train", train,
            "--test", test, "--layers", "stage1,pooled", "--epochs", "5", "--batch-size", "8",
            "--workers", "0", "--out", str(out)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "eval_linear_toy_random.json").read_text())
    assert set(record["results"]) == {"stage1", "pooled"}
    assert record["results"]["stage1"]["dim"] == 4096
    assert record["data"]["test"]["num_samples"] == 10
    assert len(record["data"]["train"]["manifest_sha256"]) == 64
    assert record["seed"] == 0 and record["config"]["epochs"] == 5
    # brightness separates the classes: even random features see it
    assert record["results"]["stage1"]["top1"] >= 90.0
    assert len(list((out / ".features").glob("*.pt"))) == 4  # 2 layers x (train, test)
    again = _invoke(args)  # served from the cache, same numbers
    assert again.exit_code == 0
    assert json.loads((out / "eval_linear_toy_random.json").read_text())["results"] == \
        record["results"]
    report = _invoke(["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "| random |" in (tmp_path / "report" / "report.md").read_text()


def test_knn_and_finetune_from_a_safetensors_file(data, tmp_path) -> None:
    from safetensors.torch import save_file

    train, test = data
    torch.manual_seed(1)
    weights = tmp_path / "mine.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(weights))
    common = ["--checkpoint", str(weights), "--arch", "resnet18", "--train", train, "--test",
              test, "--batch-size", "8", "--workers", "0", "--out", str(tmp_path)]
    result = _invoke(["eval", "knn", *common, "--k", "5"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "eval_knn_toy_mine.json").read_text())
    assert record["checkpoint"]["sha256"] and record["config"]["k"] == 5
    result = _invoke(["eval", "finetune", *common, "--freeze", "stage3", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "eval_finetune_toy_mine.json").read_text())
    assert record["results"]["freeze:stage3"]["steps"] == 3


def test_user_errors(data, tmp_path) -> None:
    train, test = data
    result = CliRunner().invoke(main, ["eval", "linear", "--checkpoint", "random", "--train",
                                       train, "--test", test, "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--arch" in result.output
    result = CliRunner().invoke(main, ["eval", "linear", "--checkpoint", "random", "--arch",
                                       "resnet18", "--train", train, "--test", test])
    assert result.exit_code != 0 and "--out" in result.output


def test_truncated_data_is_reported(tmp_path) -> None:
    from sslpipe.eval.data import eval_loader
    from sslpipe.eval.transform import EvalCollator

    short = _write_shards(tmp_path / "short", "short", 6, 0, drop_last=2)
    with pytest.raises(ValueError,
                       match=r"short-000000.tar.*holds 4 sample\(s\), the manifest lists 6"):
        list(eval_loader(short, EvalCollator(32), batch_size=4))


def test_data_dir_with_train_and_test_splits(data, tmp_path) -> None:
    import os

    train, _ = data
    base = os.path.dirname(train)  # holds train/ and test/
    args = ["eval", "knn", "--checkpoint", "random", "--arch", "resnet18", "--k", "5",
            "--batch-size", "8", "--workers", "0"]
    result = _invoke([*args, "--data", base, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a" / "eval_knn_toy_random.json").read_text())
    assert record["data"]["train"]["num_samples"] == 24
    assert record["data"]["test"]["num_samples"] == 10
    lonely = tmp_path / "only-train"
    lonely.mkdir()
    result = CliRunner().invoke(main, [*args, "--data", str(lonely), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "train" in result.output and "manifest.json" in result.output
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--train" in result.output
