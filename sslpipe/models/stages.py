"""Named stages of a timm backbone, and freezing up to one of them.

Stage names are the modules of timm's ``feature_info`` (``act1``, ``layer1`` .. ``layer4`` for a
ResNet; ``stages.0`` .. for ConvNeXt; ``conv1`` .. ``conv5`` for ``alexnet_bn``), plus aliases
``stageN``: ``stage0`` is the stem when the first feature is a stem (ResNet: ``stage2`` =
``layer2``), otherwise the features count from ``stage1`` (``alexnet_bn``: ``stage3`` = ``conv3``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["stage_names", "resolve_stage", "freeze_until"]


def stage_names(model: nn.Module) -> dict[str, str]:
    """``{name or alias: module path}`` of every stage of ``model``, in forward order."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(
            f"model {type(model).__name__} has no timm feature_info, so it has no named stages"
        )
    modules = [f["module"] for f in info]
    first = 0 if ("stem" in modules[0] or modules[0].startswith("act")) else 1
    names: dict[str, str] = {}
    for i, module in enumerate(modules):
        names[module] = module
        names[f"stage{i + first}"] = module
        if i == 0 and first == 0:
            names["stem"] = module
    return names


def resolve_stage(model: nn.Module, stage: str) -> str:
    """The module path of ``stage`` (a name or alias from :func:`stage_names`)."""
    names = stage_names(model)
    if stage not in names:
        raise ValueError(
            f"freeze_until: unknown stage {stage!r} for {type(model).__name__}. "
            f"Stages: {', '.join(names)}"
        )
    return names[stage]


def freeze_until(model: nn.Module, stage: str) -> list[str]:
    """Freeze every module that runs before ``stage`` and ``stage`` itself.

    Frozen parameters get ``requires_grad=False`` and frozen BatchNorm layers become timm's
    ``FrozenBatchNorm2d`` (running statistics fixed, also in ``train()`` mode). Call it before
    the optimizer and DDP are built. Returns the top-most frozen module paths.
    """
    from timm.utils.model import freeze

    target = resolve_stage(model, stage)
    frozen = _modules_before(model, target)
    freeze(model, frozen, include_bn_running_stats=True)
    return frozen


def _modules_before(module: nn.Module, target: str, prefix: str = "") -> list[str]:
    # Registration order is forward order for timm CNNs: freeze siblings up to the target,
    # descending into the ancestor that holds it (``stages`` for ``stages.1``).
    out: list[str] = []
    for name, child in module.named_children():
        path = prefix + name
        if path == target:
            return out + [path]
        if target.startswith(path + "."):
            return out + _modules_before(child, target, path + ".")
        out.append(path)
    return out
