"""``create_backbone``: every backbone is a timm model created with ``num_classes=0``.

The backbone returns pooled features ``B x num_features`` (float) for a float ``B x C x H x W``
input. sslpipe adds two things on top of timm: close-match suggestions for an unknown name, and
a small-input stem (3x3 stride-1 first convolution, no max-pool) for 32 px data such as CIFAR
and FashionMNIST, as the SimCLR/solo-learn CIFAR recipes do. RotNet's network-in-network
(``nin_*``, :mod:`sslpipe.models.nin`) is built for small inputs already: ``small_input`` leaves
it as it is; so are the 32 px ViTs ``vit_tiny_patch4_32`` and ``vit_small_patch4_32``
(:mod:`sslpipe.models.vit`).
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

import sslpipe.models.alexnet  # noqa: F401  (registers alexnet_bn into timm)
import sslpipe.models.nin  # noqa: F401  (registers nin_3block .. nin_5block into timm)
import sslpipe.models.vit  # noqa: F401  (registers vit_tiny_patch4_32, vit_small_patch4_32)
from sslpipe.models.vit import accept_any_size

__all__ = ["create_backbone", "check_arch"]


def create_backbone(
    arch: str,
    pretrained: bool = False,
    small_input: bool = False,
    in_chans: int = 3,
    checkpoint: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``).

    Args:
        arch: any ``timm.list_models()`` name, ``alexnet_bn`` or ``nin_3block`` ..
            ``nin_5block``.
        pretrained: load timm's pretrained weights (needs them cached or a ``file`` in
            ``pretrained_cfg_overlay``; sslpipe never downloads).
        small_input: replace the stem by a 3x3 stride-1 convolution without max-pool, for
            32 px inputs. ResNet-family models (``conv1`` + ``maxpool``) and ``alexnet_bn``;
            a no-op for the ``nin_*`` networks (stride 1 throughout).
        in_chans: input channels.
        checkpoint: a ``.safetensors`` / ``.pt`` file of backbone weights to load after the
            stem is built (use this for ``small_input`` weights, which plain timm cannot rebuild).
        **kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``global_pool``, ...).

    A Vision Transformer is returned ready for any input size that is a multiple of its patch
    (:func:`sslpipe.models.vit.accept_any_size`, timm's ``dynamic_img_size``).

    Raises:
        ValueError: unknown ``arch`` (with the closest timm names), or ``small_input`` for an
            architecture without a stem that sslpipe knows how to replace.
    """
    check_arch(arch)
    if small_input and arch == "alexnet_bn":
        kwargs["small_input"] = True
    model = timm.create_model(arch, pretrained=pretrained, num_classes=0, in_chans=in_chans,
                              **kwargs)
    if small_input and arch != "alexnet_bn" and not _built_for_small_inputs(model):
        _small_stem(model, arch, in_chans)
    if checkpoint is not None:
        load_backbone_weights(model, checkpoint)
    # a ViT takes any input size (position embeddings resampled to each input's grid): tasks
    # crop at their own sizes (DINO's local crops, 64 px views), evaluations at --size
    return accept_any_size(model)


def check_arch(arch: str) -> None:
    """Raise ValueError, listing close matches, unless timm knows ``arch``."""
    if timm.is_model(arch):
        return
    names = timm.list_models()
    # a family's prefix ("vit_tiny") first, then names spelled alike ("resnet5")
    prefixed = [n for n in names if n.startswith(arch)]
    close = prefixed[:5] or difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"arch: unknown timm architecture {arch!r}.{hint} "
                     "See timm.list_models() for every name.")


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load a state dict file (safetensors or torch) into ``model``; keys must match exactly."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"checkpoint {path!r} does not fit {type(model).__name__}: {err}") from err
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {path!r} does not fit {type(model).__name__}: missing keys "
            f"{missing[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )


def _built_for_small_inputs(model: nn.Module) -> bool:
    from sslpipe.models.nin import NetworkInNetwork

    return isinstance(model, NetworkInNetwork)


def _small_stem(model: nn.Module, arch: str, in_chans: int) -> None:
    conv1, maxpool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if isinstance(conv1, nn.Conv2d) and maxpool is not None:
        model.conv1 = nn.Conv2d(in_chans, conv1.out_channels, 3, 1, 1, bias=conv1.bias is not None)
    elif (isinstance(conv1, nn.Sequential) and isinstance(conv1[0], nn.Conv2d)
          and maxpool is not None):
        conv1[0].stride = (1, 1)  # deep stems (resnet*d): the first of three 3x3 convs
    else:
        raise ValueError(
            f"small_input: sslpipe replaces the stem of ResNet-family models (conv1 + maxpool) "
            f"and alexnet_bn. Got {arch!r}; use a model built for small inputs or 64+ px data"
        )
    model.maxpool = nn.Identity()
    for info in getattr(model, "feature_info", []):
        info["reduction"] = max(1, info["reduction"] // 4)
