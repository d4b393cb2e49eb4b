"""Reports: the tables carry the JSON's numbers; the charts are valid PNGs of the set size."""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path

import pytest

from sslpipe.eval.report import DPI, FIGSIZE, write_report, write_tables
from sslpipe.eval.results import load_results, make_record, write_result


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        data = f.read(32)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _records(tmp_path):
    runs = [("random", None, {"stage1": (41.234, 80.5), "pooled": (22.7, 77.6)}),
            ("rotation", 4000, {"stage1": (61.1, 95.0), "pooled": (70.25, 97.3)}),
            ("rotation", 1000, {"stage1": (58.0, 93.0), "pooled": (66.0, 96.0)})]
    for method, size, layers in runs:
        results = {k: {"top1": round(a, 2), "top5": b} for k, (a, b) in layers.items()}
        ckpt = {"pretrain": {"num_images": size}} if size else {}
        record = make_record("linear", method, "resnet18", "fashion-mnist", results, ckpt)
        write_result(record, tmp_path / f"{method}{size}")
    return load_results([str(tmp_path)])


def test_tables_equal_the_json(tmp_path) -> None:
    records = _records(tmp_path)
    paths = write_tables(records, tmp_path / "report")
    rows = list(_csv(paths["layers_csv"]))
    assert len(rows) == 6
    for row in rows:
        method = row["method"].split(" (")[0]
        size = row["method"].split("(")[1].split()[0] if "(" in row["method"] else None
        match = [r for r in records if r["method"] == method and
                 str((r["checkpoint"].get("pretrain") or {}).get("num_images")) == str(size)]
        numbers = match[0]["results"][row["layer"]]
        assert float(row["top1"]) == numbers["top1"] and float(row["top5"]) == numbers["top5"]
    best = {r["method"]: float(r["top1"]) for r in _csv(paths["datasets_csv"])}
    assert best == {"random": 41.23, "rotation": 70.25}  # each method's best layer
    sizes = list(_csv(paths["subsets_csv"]))
    assert [(r["pretrain_images"], float(r["top1"])) for r in sizes] == [("1000", 66.0),
                                                                         ("4000", 70.25)]
    markdown = Path(paths["markdown"]).read_text()
    assert "41.23 / 80.50" in markdown and "70.25 (pooled)" in markdown


def test_charts_are_pngs_of_the_expected_size(tmp_path) -> None:
    paths = write_report({"random": {"pooled": {"top1": 20.0, "top5": 70.0}},
                          "rotation": {"pooled": {"top1": 80.0, "top5": 99.0}}}, tmp_path)
    pngs = [p for k, p in paths.items() if k.startswith("png:")]
    assert len(pngs) == 2
    for png in pngs:
        assert _png_size(png) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


def test_result_file_round_trip_and_errors(tmp_path) -> None:
    record = make_record("knn", "simclr", "resnet18", "cifar10", {"pooled": {"top1": 1.5}},
                         seed=3, config={"k": 200})
    path = write_result(record, tmp_path)
    assert path.endswith("eval_knn_cifar10_simclr.json")
    assert json.loads(Path(path).read_text())["config"] == {"k": 200}
    with pytest.raises(ValueError, match="top1"):
        make_record("knn", "x", "a", "d", {"pooled": {"acc": 1}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no eval_"):
        load_results([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="does not exist"):
        load_results([str(tmp_path / "missing")])


def test_results_at_different_input_sizes_never_share_a_table(tmp_path) -> None:
    for size, top1 in ((32, 70.0), (64, 80.0)):
        results = {"pooled": {"top1": top1, "top5": 99.0}}
        record = make_record("linear", "rotation", "resnet18", "fashion-mnist", results, {},
                             config={"size": size})
        write_result(record, tmp_path / str(size))
    paths = write_tables(load_results([str(tmp_path)]), tmp_path / "report")
    md = Path(paths["markdown"]).read_text()
    assert "## linear on fashion-mnist (32 px): method x layer" in md
    assert "## linear on fashion-mnist (64 px): method x layer" in md
    rows = _csv(paths["layers_csv"])
    assert sorted((r["dataset"], r["top1"]) for r in rows) == [
        ("fashion-mnist (32 px)", "70.00"), ("fashion-mnist (64 px)", "80.00")]
    # one chart per table, named as documented: no stray dashes, none overwriting another
    charts = sorted(os.path.basename(p) for k, p in paths.items() if k.startswith("png:"))
    assert charts == ["datasets_linear.png", "layers_linear_fashion-mnist-32-px.png",
                      "layers_linear_fashion-mnist-64-px.png"]


def test_datasets_whose_names_meet_in_a_file_name_keep_their_own_charts(tmp_path) -> None:
    for dataset in ("stl10 (a)", "stl10 [a]"):
        record = make_record("linear", "rotation", "resnet18", dataset,
                             {"pooled": {"top1": 50.0}}, {})
        write_result(record, tmp_path / dataset)
    paths = write_tables(load_results([str(tmp_path)]), tmp_path / "report")
    charts = sorted(os.path.basename(p) for k, p in paths.items() if k.startswith("layers_png")
                    or k.startswith("png:layers"))
    assert charts == ["layers_linear_stl10-a-2.png", "layers_linear_stl10-a.png"]
