"""Small-image ViTs registered into timm: ``vit_tiny_patch4_32`` and ``vit_small_patch4_32``.

timm's ViTs are built for 224 px (``vit_small_patch16_224``: a 14 x 14 grid of 16 px patches);
at 32 px (CIFAR, FashionMNIST) a 16 px patch leaves a 2 x 2 grid, too coarse for MAE's
masking. These are timm's ViT-Ti and ViT-S (192 / 384 wide, 12 blocks, 3 / 6 heads) at
``img_size=32`` with 4 px patches: an 8 x 8 grid of 64 patches, as the small-data ViT recipes use.

They are plain timm ``VisionTransformer`` models: after ``import sslpipe``,
``timm.create_model("vit_tiny_patch4_32", num_classes=0)``; their weights also load into
``timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0)``
without sslpipe. For a float ``B x 3 x 32 x 32`` input the backbone returns ``B x 192`` (ViT-S:
``B x 384``) pooled features (the class token after the final norm); ``feature_info`` names
the blocks, so per-layer probes call them ``stage1`` .. ``stage12``.

:func:`accept_any_size` lets any timm ViT take inputs of any size (a multiple of its patch):
``create_backbone`` applies it to every ViT, so a ViT named for 224 px trains and is evaluated
at the size a task or ``--size`` asks for.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer
from torch import nn

__all__ = ["accept_any_size"]


def accept_any_size(backbone: nn.Module) -> nn.Module:
    """Let a timm Vision Transformer built for one input size take any (local crops of 96 px
    beside global ones of 224), as ``timm.create_model(arch, dynamic_img_size=True)`` builds
    it: the patch embedding keeps its grid (NHWC) and accepts other sizes, and the position
    embeddings are resampled to each input's grid (bicubic), which is what the official DINO
    code's ``interpolate_pos_encoding`` does. Other backbones are returned unchanged."""
    embed = getattr(backbone, "patch_embed", None)
    if getattr(backbone, "dynamic_img_size", True) or not hasattr(embed, "strict_img_size"):
        return backbone
    from timm.layers import Format

    setattr(backbone, "dynamic_img_size", True)  # noqa: B010  (a Final in timm's typing)
    embed.strict_img_size = False  # type: ignore[union-attr]
    embed.flatten = False  # type: ignore[union-attr]
    embed.output_fmt = Format.NHWC  # type: ignore[union-attr]
    return backbone


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 32, 32), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj", "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "vit_tiny_patch4_32.untrained": _cfg(),
    "vit_small_patch4_32.untrained": _cfg(),
})


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Ti/4 at 32 px: 192 wide, 12 blocks, 3 heads, an 8 x 8 patch grid."""
    args = {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 12, "num_heads": 3}
    return _create_vision_transformer("vit_tiny_patch4_32", pretrained=pretrained,
                                      **{**args, **kwargs})


@register_model
def vit_small_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-S/4 at 32 px: 384 wide, 12 blocks, 6 heads, an 8 x 8 patch grid."""
    args = {"img_size": 32, "patch_size": 4, "embed_dim": 384, "depth": 12, "num_heads": 6}
    return _create_vision_transformer("vit_small_patch4_32", pretrained=pretrained,
                                      **{**args, **kwargs})
