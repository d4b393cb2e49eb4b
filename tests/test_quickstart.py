"""`sslpipe quickstart`, shortened: real pretraining and probes; pretraining must beat random."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from sslpipe.cli import main
from sslpipe.quickstart import format_table


def test_quickstart_pretraining_beats_random_init(tmp_path) -> None:
    out = tmp_path / "qs"
    result = CliRunner().invoke(main, [
        "quickstart", "--out", str(out), "--epochs", "1", "--max-steps", "25",
        "--layers", "stage3,pooled", "--probe-epochs", "10", "--workers", "0", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "rotation top-1/top-5" in result.output and "pooled" in result.output
    saved = json.loads((out / "quickstart.json").read_text())
    rotation, random_init = saved["results"]["rotation"], saved["results"]["random init"]
    assert rotation["pooled"]["top1"] > random_init["pooled"]["top1"] + 5
    for method in (rotation, random_init):
        for layer in method.values():
            assert 0 <= layer["top1"] <= layer["top5"] <= 100
    charts = sorted(out.glob("*.png"))
    assert charts and all(Image.open(c).size[0] >= 400 for c in charts)
    assert (out / "pretrain-rotation" / "backbone.safetensors").is_file()


def test_format_table_shows_the_gain() -> None:
    results = {"a": {"pooled": {"top1": 80.0, "top5": 99.0}},
               "b": {"pooled": {"top1": 70.5, "top5": 97.0}}}
    table = format_table(results)
    assert "+9.5" in table and "80.0" in table and "70.5" in table


def test_bad_option_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(main, ["quickstart", "--out", str(tmp_path), "--arch", "resnet1",
                                       "--no-progress"])
    assert result.exit_code != 0
    assert "resnet1" in result.output
