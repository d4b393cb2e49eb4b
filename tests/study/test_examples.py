"""The example studies parse, and the CPU-sized one fits its stated time by the cost estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslpipe.study.cost import estimate
from sslpipe.study.grid import build_grid
from sslpipe.study.spec import load_study

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_parses(name: str) -> None:
    study = load_study(EXAMPLES / name)
    assert len(build_grid(study)) > 0


def test_fashion_mnist_study_fits_an_hour_on_the_cpu() -> None:
    study = load_study(EXAMPLES / "fashion_mnist_study.toml")
    assert study.label_budgets == ("1%", "10%", "100%") and study.probe_seeds == 3
    assert set(study.baselines) == {"random", "scratch"}
    grid = build_grid(study)
    costs = estimate(study, grid, device="cpu")
    assert all(c.seconds is not None for c in costs.values())
    assert sum(c.seconds or 0.0 for c in costs.values()) < 3600


def test_rotnet_blocks_probes_every_block_of_3_4_and_5() -> None:
    study = load_study(EXAMPLES / "rotnet_blocks.toml")
    assert study.archs == ("nin_3block_w50", "nin_4block_w50", "nin_5block_w50")
    assert study.tasks == ("rotation",)
    assert all(ev.options.get("layers") == "all" for ev in study.evaluations)
