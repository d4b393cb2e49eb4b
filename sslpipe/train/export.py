"""Backbone export: the trained backbone as a plain timm state dict in safetensors.

``export_run(RUN_DIR, OUT)`` takes the newest checkpoint of a run; the file loads back with
plain timm::

    timm.create_model(arch, pretrained=True, num_classes=0,
                      pretrained_cfg_overlay=dict(file="backbone.safetensors"))

(``small_input`` backbones have a different stem than timm's default: load those with
``sslpipe.models.create_backbone(arch, small_input=True, checkpoint=...)``.) The file's
metadata records ``arch``, ``small_input``, ``task`` and ``network``.

A task with a momentum teacher (:class:`~sslpipe.tasks.teacher.MomentumPair`: BYOL, MoCo v3,
DINO) holds two copies of the backbone: the online one (trained by gradient descent) and the
teacher (its moving average). ``network="online"`` or ``"teacher"`` picks one; by default the
task's ``eval_network`` (DINO's users evaluate the teacher, BYOL's and MoCo's the online one).
The teacher's copy is found from the MomentumPair whose ``online`` holds the backbone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslpipe.atomic import atomic_write
from sslpipe.tasks.teacher import MomentumPair

__all__ = ["NETWORKS", "backbone_prefix", "export_networks", "export_run", "export_state",
           "network_prefixes"]

NETWORKS = ("online", "teacher")


def export_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str],
               checkpoint: str | None = None, network: str | None = None) -> str:
    """Write the backbone of ``checkpoint`` (default: the run's newest) to ``out``.

    Args:
        network: ``"online"`` or ``"teacher"`` (a run with a momentum teacher); None: the
            task's ``eval_network``, the one the run's ``backbone.safetensors`` holds.

    Raises:
        ValueError: no checkpoint, an unknown network, or ``"teacher"`` for a run without one.
    """
    from sslpipe.train.checkpoint import latest_checkpoint, load_checkpoint

    path = checkpoint or latest_checkpoint(run_dir)
    if path is None:
        raise ValueError(f"run_dir: no checkpoint in {str(run_dir)!r}/checkpoints. Got a "
                         "directory that is not a finished or interrupted sslpipe run")
    state = load_checkpoint(path)
    # checkpoints written before teachers existed hold only the online backbone's prefix
    prefixes = {"online": state["backbone_prefix"]}
    if state.get("teacher_prefix") is not None:
        prefixes["teacher"] = state["teacher_prefix"]
    network = network or state.get("eval_network", "online")
    return export_state(state["model"], _prefix_of(prefixes, network), state["config"], out,
                        network)


def export_networks(model_state: dict[str, torch.Tensor], prefixes: dict[str, str],
                    eval_network: str, config: dict[str, Any],
                    run_dir: str | os.PathLike[str]) -> str:
    """A finished run's exports: ``backbone.safetensors`` (the ``eval_network``'s backbone)
    and, when the model holds a teacher, ``online.safetensors`` and ``teacher.safetensors``.
    Returns the path of ``backbone.safetensors``."""
    run_dir = Path(run_dir)
    if "teacher" in prefixes:
        for network, prefix in prefixes.items():
            export_state(model_state, prefix, config, run_dir / f"{network}.safetensors",
                         network)
    return export_state(model_state, _prefix_of(prefixes, eval_network), config,
                        run_dir / "backbone.safetensors", eval_network)


def export_state(model_state: dict[str, torch.Tensor], prefix: str, config: dict[str, Any],
                 out: str | os.PathLike[str], network: str = "online") -> str:
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
                "small_input": str(bool(config.get("small_input", False))),
                "network": network}
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata=metadata))
    return str(out)


def backbone_prefix(model: nn.Module, backbone: nn.Module) -> str:
    """The state-dict prefix under which ``model`` holds ``backbone`` ("" if it is the model)."""
    for name, module in model.named_modules():
        if module is backbone:
            return name
    raise ValueError("task.build(backbone) returned a model that does not contain the backbone")


def network_prefixes(model: nn.Module, backbone: nn.Module, eval_network: str = "online"
                     ) -> dict[str, str]:
    """The state-dict prefixes of the backbone's copies in ``model``: ``{"online": ...}``, and
    ``"teacher"`` when a :class:`~sslpipe.tasks.teacher.MomentumPair` holds the backbone in its
    ``online`` module (the same path under its ``target``).

    Raises:
        ValueError: ``model`` does not contain ``backbone``, or ``eval_network`` is not a
            network the model has.
    """
    online = backbone_prefix(model, backbone)
    prefixes = {"online": online}
    for name, module in model.named_modules():
        if isinstance(module, MomentumPair):
            pair = f"{name}." if name else ""
            if online == pair + "online" or online.startswith(pair + "online."):
                prefixes["teacher"] = pair + "target" + online[len(pair + "online"):]
                break
    _prefix_of(prefixes, eval_network)
    return prefixes


def _prefix_of(prefixes: dict[str, str], network: str) -> str:
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}. Got {network!r}")
    if network not in prefixes:
        raise ValueError(f"network {network!r}: this model has no momentum teacher holding "
                         "the backbone; only 'online' can be exported")
    return prefixes[network]
