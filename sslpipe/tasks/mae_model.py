"""MAE's encoder-decoder around a timm ``VisionTransformer`` (He et al. 2022; the official
``MaskedAutoencoderViT`` of facebookresearch/mae, ``models_mae.py``), and the choice between it
and SimMIM's masked-input model for other backbones (:func:`build_masked_model`).

The encoder is the timm ViT itself, read part by part (``patch_embed``, ``cls_token``,
``reg_token``, ``pos_embed``, ``norm_pre``, ``blocks``, ``norm``), so that the trained
backbone is a plain timm model whose state dict loads back with ``timm.create_model``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from sslpipe.tasks.heads import feature_dim

__all__ = ["MAEModel", "build_masked_model", "sincos_pos_embed"]


def build_masked_model(backbone: nn.Module, options: Any) -> nn.Module:
    """:class:`MAEModel` for a timm ``VisionTransformer``, else
    :class:`~sslpipe.tasks.simmim.MaskedConvModel` (``options``: the task's ``MAEOptions``).

    Raises:
        ValueError: a ViT whose patch size or patch grid does not match ``patch_size`` and
            ``size``, or a backbone whose stride at its last feature map is unknown.
    """
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(backbone, VisionTransformer):
        return MAEModel(backbone, options.patch_size, options.grid, options.decoder_dim,
                        options.decoder_depth, options.decoder_heads, options.fixed_pos_embed)
    from sslpipe.tasks.simmim import MaskedConvModel

    info = getattr(backbone, "feature_info", None)
    try:
        stride = int(info[-1]["reduction"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError) as err:
        raise ValueError(
            f"backbone: {type(backbone).__name__} is not a timm VisionTransformer and has no "
            "feature_info giving its stride; MAE needs a ViT, or a timm ConvNet for the "
            "SimMIM-style masked input") from err
    return MaskedConvModel(backbone, options.patch_size, stride)


class MAEModel(nn.Module):
    """Encoder on the visible patches of a timm ViT, then MAE's light decoder.

    Args:
        backbone: a timm ``VisionTransformer`` created with ``num_classes=0``.
        patch_size: the collator's ``patch_size`` (must be the ViT's).
        grid: patches per side of the collator's images (must be the ViT's grid).
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads.
        fixed_pos_embed: overwrite the ViT's ``pos_embed`` with the 2-D sin-cos table and freeze
            it (``requires_grad=False``), as the official encoder's.

    ``forward((images, mask_grid))``: float ``B x 3 x H x W`` normalised images and float
    ``B x 1 x g x g`` (1 = masked, the same count in every row) -> predicted pixels
    ``B x N x (p * p * 3)`` for every patch (the loss reads only the masked ones).
    :meth:`encode` gives the encoder's tokens alone.

    Raises:
        ValueError: patch size or grid mismatch, or prefix tokens other than class and register
            tokens (distilled ViTs).
    """

    def __init__(self, backbone: nn.Module, patch_size: int, grid: int, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16,
                 fixed_pos_embed: bool = True) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        vit: Any = backbone
        self.backbone = backbone
        own_patch = tuple(vit.patch_embed.patch_size)
        own_grid = tuple(vit.patch_embed.grid_size)
        if own_patch != (patch_size, patch_size) or own_grid != (grid, grid):
            raise ValueError(
                f"backbone: {type(vit).__name__} has {own_patch[0]} px patches on a "
                f"{own_grid[0]}x{own_grid[1]} grid ({own_grid[0] * own_patch[0]} px input); the "
                f"task makes {patch_size} px patches on a {grid}x{grid} grid. Pass "
                f"-o patch_size={own_patch[0]} -o size={own_grid[0] * own_patch[0]}, or a ViT "
                f"built for {grid * patch_size} px (vit_tiny_patch4_32 for 32 px)")
        self.num_prefix = int(vit.num_prefix_tokens)
        prefix = int(vit.cls_token is not None) + int(getattr(vit, "reg_token", None) is not None
                                                      and vit.num_reg_tokens)
        if prefix != self.num_prefix:
            raise ValueError(f"backbone: {type(vit).__name__} has prefix tokens other than the "
                             "class and register tokens; MAE reads only those")
        self.patch_size, self.grid = patch_size, grid
        self.num_patches = grid * grid
        width = feature_dim(vit)
        if fixed_pos_embed and vit.pos_embed is not None:
            with torch.no_grad():
                table = sincos_pos_embed(width, grid, 0 if vit.no_embed_class else self.num_prefix)
                vit.pos_embed.copy_(table.to(vit.pos_embed.dtype))
            vit.pos_embed.requires_grad_(False)
        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed",
                             sincos_pos_embed(decoder_dim, grid, self.num_prefix),
                             persistent=False)
        self.decoder_blocks = nn.Sequential(*(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True,
                  norm_layer=_layer_norm)  # type: ignore[arg-type]  # a factory, as timm's
            for _ in range(decoder_depth)))
        self.decoder_norm = _layer_norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size * patch_size * 3)
        self._init_decoder()

    def _init_decoder(self) -> None:
        # the official initialize_weights / _init_weights, on the decoder only: the encoder
        # keeps timm's initialisation (and any weights the backbone was loaded with)
        nn.init.normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, grid = inputs
        mask = grid.flatten(1) > 0.5
        return self.decode(self.encode(images, mask), mask)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder tokens ``B x (P + K) x C``: the ``P`` prefix tokens then the ``K`` visible
        patches in row-major order, after ``blocks`` and ``norm`` (``mask``: bool ``B x N``,
        True = masked, ``K`` visible in every row)."""
        vit: Any = self.backbone
        x = vit.patch_embed(images)
        if x.ndim == 4:  # dynamic_img_size ViTs keep B x h x w x C
            x = x.flatten(1, 2)
        b, n, c = x.shape
        if mask.shape != (b, n):
            raise ValueError(f"mask must be B x N = {b} x {n}. Got {tuple(mask.shape)}")
        pos = vit.pos_embed
        prefix_pos = None
        if pos is not None:
            if vit.no_embed_class:
                x = x + pos
            else:
                x = x + pos[:, self.num_prefix:]
                prefix_pos = pos[:, :self.num_prefix]
        keep = int(n - mask[0].sum())
        x = x[~mask].reshape(b, keep, c)
        prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, getattr(vit, "reg_token", None))
                  if t is not None]
        if prefix:
            head = torch.cat(prefix, 1)
            x = torch.cat([head + prefix_pos if prefix_pos is not None else head, x], 1)
        x = vit.norm_pre(vit.pos_drop(x))
        return vit.norm(vit.blocks(x))

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoder prediction ``B x N x (p * p * 3)`` from :meth:`encode`'s tokens."""
        x = self.decoder_embed(tokens)
        b, d = x.shape[0], x.shape[2]
        head, visible = x[:, :self.num_prefix], x[:, self.num_prefix:]
        full = self.mask_token.to(x.dtype).expand(b, self.num_patches, d)
        # the visible rows go back to their places in row-major order (the official unshuffle)
        full = full.masked_scatter(~mask[..., None], visible)
        pos = cast(torch.Tensor, self.decoder_pos_embed)
        x = torch.cat([head, full], 1) + pos.to(x.dtype)
        x = self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))
        return x[:, self.num_prefix:]


def _layer_norm(dim: int, **kwargs: Any) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **kwargs)  # the official partial(nn.LayerNorm, eps=1e-6)


def sincos_pos_embed(dim: int, grid: int, prefix: int = 0) -> torch.Tensor:
    """The fixed 2-D sin-cos position table ``1 x (prefix + grid^2) x dim`` (float32).

    As the official ``get_2d_sincos_pos_embed`` (facebookresearch/mae, ``util/pos_embed.py``):
    half the channels encode the patch's column, half its row, each as
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (dim / 4))``; the ``prefix``
    (class) positions are zeros. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 for a 2-D sin-cos table. Got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                                torch.arange(grid, dtype=torch.float64), indexing="ij")

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.reshape(-1, 1) * omega
        return torch.cat([angle.sin(), angle.cos()], 1)

    table = torch.cat([one_axis(cols), one_axis(rows)], 1)
    table = torch.cat([torch.zeros(prefix, dim, dtype=torch.float64), table])
    return table.float().unsqueeze(0)
