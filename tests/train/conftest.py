"""Small stand-ins for the trainer tests: random uint8 images with labels, tiny task options."""

from __future__ import annotations

import dataclasses

import torch

from sslpipe.registry import task_class

# Shrinks every task to a CPU-test size; options a task does not have are left out.
TINY = {"size": 32, "hidden_dim": 32, "projection_dim": 16, "expander_dim": 32,
        "expander_layers": 2, "tile_dim": 32, "patch_dim": 32, "num_features": 32,
        "num_permutations": 8, "num_classes": 10, "predictor_dim": 32, "decoder_dim": 32,
        "decoder_depth": 1, "decoder_heads": 2}
SIZES = {"jigsaw": 48, "relative_patch": 48, "counting": 32}


def tiny_options(name: str, tmp_path=None) -> dict:
    """Options of task ``name`` (``a+b`` too) small enough for a few CPU steps."""
    if "+" in name:
        return {part: tiny_options(part, tmp_path) for part in name.split("+")}
    fields = {f.name for f in dataclasses.fields(task_class(name).Options)}
    out = {k: v for k, v in TINY.items() if k in fields}
    if "size" in fields:
        out["size"] = SIZES.get(name, 32)
    if "cache_dir" in fields and tmp_path is not None:
        out["cache_dir"] = str(tmp_path / "cache")
    return out


def fake_data(n: int = 64, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images ``n x 3 x size x size`` with smooth structure, and labels 0..9."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    images = torch.nn.functional.interpolate(low, size=size, mode="bilinear")
    images = (images * 255).round().to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)
