"""Backbone export: the trained backbone as a plain timm state dict in safetensors.

``export_run(RUN_DIR, OUT)`` takes the newest checkpoint of a run; the file loads back with
plain timm::

    timm.create_model(arch, pretrained=True, num_classes=0,
                      pretrained_cfg_overlay=dict(file="backbone.safetensors"))

(``small_input`` backbones have a different stem than timm's default: load those with
``sslpipe.models.create_backbone(arch, small_input=True, checkpoint=...)``.) The file's
metadata records ``arch``, ``small_input`` and ``task``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["backbone_prefix", "export_run", "export_state"]
from sslpipe.atomic import atomic_write


def export_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str],
               checkpoint: str | None = None) -> str:
    """Write the backbone of ``checkpoint`` (default: the run's newest) to ``out``."""
    from sslpipe.train.checkpoint import latest_checkpoint, load_checkpoint

    path = checkpoint or latest_checkpoint(run_dir)
    if path is None:
        raise ValueError(f"run_dir: no checkpoint in {str(run_dir)!r}/checkpoints. Got a "
                         "directory that is not a finished or interrupted sslpipe run")
    state = load_checkpoint(path)
    return export_state(state["model"], state["backbone_prefix"], state["config"], out)


def export_state(model_state: dict[str, torch.Tensor], prefix: str, config: dict[str, Any],
                 out: str | os.PathLike[str]) -> str:
    """Write the ``prefix.*`` entries of a task model's state dict as a backbone file."""
    from safetensors.torch import save_file

    from sslpipe.models import create_backbone

    cut = len(prefix) + 1 if prefix else 0
    state = {k[cut:]: v.detach().cpu().contiguous() for k, v in model_state.items()
             if not prefix or k.startswith(prefix + ".")}
    # Frozen BatchNorm layers (freeze_until) have no num_batches_tracked; timm's strict
    # loading wants every key of a fresh model.
    with torch.device("meta"):
        reference = create_backbone(config["arch"], small_input=config.get("small_input", False))
    for key, value in reference.state_dict().items():
        if key not in state and key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=value.dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "arch": str(config["arch"]), "task": str(config.get("task")),
                "small_input": str(bool(config.get("small_input", False)))}
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata=metadata))
    return str(out)


def backbone_prefix(model: nn.Module, backbone: nn.Module) -> str:
    """The state-dict prefix under which ``model`` holds ``backbone`` ("" if it is the model)."""
    for name, module in model.named_modules():
        if module is backbone:
            return name
    raise ValueError("task.build(backbone) returned a model that does not contain the backbone")
