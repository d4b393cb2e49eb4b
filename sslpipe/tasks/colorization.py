"""Colorization (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016).

The backbone sees only lightness and predicts the colour. Input: the L channel of CIE Lab,
as ``L / 100`` repeated to 3 channels and normalised with ``mean``/``std`` (a grey picture, so
every timm backbone and its pretrained stem work unchanged; the authors feed ``L - 50`` on one
channel, the same information up to an affine change of the first layer). Target: the ab
channels at ``1/target_stride`` of the input resolution, point-sampled every
``target_stride`` pixels as the authors' training net does (``target_sampling="area"``
averages instead), either

* ``mode="classification"`` (the paper): a distribution over the authors' 313 in-gamut ab
  bins of a grid of 10 (:func:`sslpipe.ops.ab_bins`, in their order), soft-encoded on the 10
  nearest bins with a Gaussian of sigma 5 (the authors' ``NNEncLayer``; the paper's text says
  5), and a per-pixel class-rebalancing weight; the loss is the rebalanced multinomial
  cross-entropy; or
* ``mode="regression"``: ab itself (the model predicts ``ab / 100``), smooth-L1 or L2 loss.

The head is dense: the backbone's last feature map (``forward_features``), a 1x1 conv,
BatchNorm, ReLU and a 1x1 conv to 313 logits (or 2 values), bilinearly upsampled to the target
resolution ``H / target_stride``. Pictures decode a prediction with the annealed mean
(:func:`sslpipe.ops.decode_ab`, T = 0.38) and :func:`sslpipe.ops.lab_to_rgb`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslpipe.batch import Batch, HostBatch
from sslpipe.ops.ab_prior import (
    Prior,
    default_ab_prior,
    estimate_ab_prior,
    load_ab_prior,
    rebalance_weights,
)
from sslpipe.ops.color import denormalize, normalize
from sslpipe.ops.geometry import hflip, square_crops
from sslpipe.ops.images import Images
from sslpipe.ops.lab import NUM_AB_BINS, ab_bins, encode_ab, lab_to_rgb, nearest_ab_bin, rgb_to_lab
from sslpipe.registry import register_task
from sslpipe.tasks.base import (
    Collator,
    CollatorOptions,
    Task,
    check_choice,
    check_positive,
    check_probability,
    labels_on,
    meta_on,
)
from sslpipe.tasks.heads import DenseHeadModel

__all__ = [
    "Colorization", "ColorizationCollator", "ColorizationOptions", "colorization_loss",
    "colorization_regression_loss", "default_ab_prior", "estimate_ab_prior", "load_ab_prior",
    "rebalance_weights",
]

AB_SCALE = 100.0  # regression outputs are ab / AB_SCALE


@dataclass(frozen=True)
class ColorizationOptions(CollatorOptions):
    """Options of the colorization task.

    Attributes:
        size: input side in pixels (the paper trains on 176 px crops).
        target_stride: the targets (and the head's output) are ``size // target_stride``.
        target_sampling: how ab is reduced to the target resolution: ``"point"`` takes every
            ``target_stride``-th pixel (the authors' net: a 1x1 convolution of stride 4),
            ``"area"`` averages each ``target_stride`` square.
        mode: ``"classification"`` (313 ab bins, the paper) or ``"regression"`` (ab values).
        crop: square crop of non-square images, ``"random"`` or ``"center"``.
        flip: probability of a horizontal flip.
        neighbours, sigma: soft encoding on the ``neighbours`` nearest bins with a Gaussian of
            width ``sigma``: 10 and 5 in the authors' training code (``NNEncLayer``), which
            produced the published numbers; the paper's text says 5 neighbours.
        rebalance: lambda of the class rebalancing, ``w ~ ((1 - lambda) p + lambda / Q)^-1``
            (0.5 in the paper; 1 turns rebalancing off).
        prior: the ab bin prior p: None (the default prior, see :func:`default_ab_prior`),
            313 probabilities, or a ``.pt`` / ``.npy`` file of them (from
            :func:`estimate_ab_prior`, or the authors' ImageNet prior
            ``resources/prior_probs.npy``: the bins are theirs, in their order).
        regression_loss: ``"smooth_l1"`` or ``"l2"`` (``mode="regression"`` only).
        hidden_dim: width of the head's hidden 1x1 conv.
        gray_threshold: an image counts as colour when any of its ab target values exceeds
            this in absolute value (Lab units); the others, grayscale images (ImageNet holds
            thousands), are left out of the loss, as the authors' training code does (its
            NonGrayMaskLayer, threshold 5). None trains on every image.
    """

    size: int = 176
    target_stride: int = 4
    target_sampling: str = "point"
    mode: str = "classification"
    crop: str = "random"
    flip: float = 0.5
    neighbours: int = 10
    sigma: float = 5.0
    rebalance: float = 0.5
    prior: Prior = None
    regression_loss: str = "smooth_l1"
    hidden_dim: int = 256
    gray_threshold: float | None = 5.0

    def __post_init__(self) -> None:
        check_positive("size", self.size)
        check_positive("target_stride", self.target_stride)
        if self.size // self.target_stride < 1:
            raise ValueError(
                f"size // target_stride must be >= 1. Got {self.size} // {self.target_stride}"
            )
        check_choice("target_sampling", self.target_sampling, ("point", "area"))
        check_choice("mode", self.mode, ("classification", "regression"))
        check_choice("crop", self.crop, ("random", "center"))
        check_probability("flip", self.flip)
        if not 1 <= self.neighbours <= 36:
            raise ValueError(f"neighbours must be in 1..36. Got {self.neighbours}")
        check_positive("sigma", self.sigma)
        check_probability("rebalance", self.rebalance)
        check_choice("regression_loss", self.regression_loss, ("smooth_l1", "l2"))
        check_positive("hidden_dim", self.hidden_dim)
        if self.gray_threshold is not None:
            check_positive("gray_threshold", self.gray_threshold, allow_zero=True)
        load_ab_prior(self.prior)


class ColorizationCollator(Collator):
    """Square crop, resize, flip; inputs are L, targets the (quantised) ab at reduced size.

    Returns a Batch with ``inputs`` float ``B x 3 x size x size`` (L / 100 repeated,
    normalised), ``labels`` int64 ``B`` or None, ``meta`` ``boxes`` (``B x 4``) and ``flip``
    (bool ``B``), and ``targets`` a dict (``h = w = size // target_stride``):

    * ``ab``: float ``B x 2 x h x w``, the true ab (both modes);
    * ``bins``: int64 ``B x k x h x w``, the k nearest bins, nearest first (classification);
    * ``soft``: float ``B x k x h x w``, their soft-encoding weights, summing to 1;
    * ``weights``: float ``B x h x w``, the rebalancing weight of each pixel's nearest bin,
      0 on a grayscale image (classification);
    * ``color``: float ``B``, 1 for a colour image, 0 for a grayscale one (``gray_threshold``;
      all 1 when it is None); the losses leave the grayscale ones out.
    """

    options: ColorizationOptions

    def __init__(self, options: ColorizationOptions) -> None:
        super().__init__(options)
        self.bin_weights = rebalance_weights(load_ab_prior(options.prior), options.rebalance,
                                             options.sigma)

    def make_host(self, images: Images, generator: torch.Generator | None) -> HostBatch:
        opt = self.options
        x, boxes = square_crops(images.images, opt.size, opt.crop, generator)
        flip = torch.rand(len(images), generator=generator) < opt.flip
        return HostBatch({"crops": x}, images.labels, {"boxes": boxes, "flip": flip})

    def make_device(self, host: HostBatch) -> Batch:
        opt = self.options
        x = hflip(host.pixels["crops"], host.meta["flip"])
        lab = rgb_to_lab(x.float() / 255.0)
        grey = (lab[:, :1] * 2.55).expand(-1, 3, -1, -1)  # L / 100 on the 0..255 scale
        inputs = normalize(grey, opt.mean, opt.std)
        side = opt.size // opt.target_stride
        ab = _reduce_ab(lab[:, 1:], side, opt.target_stride, opt.target_sampling)
        if opt.gray_threshold is None:
            color = ab.new_ones(len(ab))
        else:
            color = (ab.abs().amax(dim=(1, 2, 3)) > opt.gray_threshold).float()
        targets = {"ab": ab, "color": color}
        if opt.mode == "classification":
            bins, soft = encode_ab(ab, opt.neighbours, opt.sigma)
            weights = self.bin_weights.to(ab.device, non_blocking=True)[bins[:, 0]]
            targets.update(bins=bins, soft=soft, weights=weights * color[:, None, None])
        device = inputs.device
        return Batch(inputs, targets, labels_on(host, device), meta_on(host.meta, device))


@register_task("colorization",
               "predict the ab colour of the L channel over 313 bins (Zhang et al. 2016)")
class Colorization(Task):
    """Colorization: classify each pixel's ab colour (or regress it) from lightness."""

    Options = ColorizationOptions
    Collator = ColorizationCollator
    options: ColorizationOptions

    def build(self, backbone: nn.Module) -> nn.Module:
        out = NUM_AB_BINS if self.options.mode == "classification" else 2
        return DenseHeadModel(backbone, out, self.options.target_stride, self.options.hidden_dim)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        t = _targets(batch)
        if self.options.mode == "classification":
            return colorization_loss(outputs, t["bins"], t["soft"], t["weights"])
        return colorization_regression_loss(outputs, t["ab"], self.options.regression_loss,
                                            t.get("color"))

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        t = _targets(batch)
        if self.options.mode == "classification":
            return {"pretext_acc": (outputs.argmax(1) == t["bins"][:, 0]).float().mean()}
        return {"ab_abs_err": (outputs.detach() * AB_SCALE - t["ab"]).abs().mean()}

    def visualize(self, batch: Batch, max_images: int = 8) -> list[tuple[str, torch.Tensor]]:
        t = _targets(batch)
        x = _single(batch.inputs)[:max_images].float().cpu()
        grey = denormalize(x, self.options.mean, self.options.std)
        light = grey[:, :1] * 100.0
        ab = t["ab"][:max_images].float().cpu()
        quantised = ab_bins()[nearest_ab_bin(ab)].permute(0, 3, 1, 2)
        rows = [
            ("input: L channel (what the backbone sees)", grey),
            (f"true colour: L + ab at 1/{self.options.target_stride} resolution",
             _compose(light, ab)),
            ("target: ab quantised to the nearest of 313 bins", _compose(light, quantised)),
        ]
        if "weights" in t:
            w = t["weights"][:max_images].float().cpu()
            rows.append(("rebalancing weight of each target pixel (white = max)",
                         (w / w.max().clamp_min(1e-6))[:, None].expand(-1, 3, -1, -1)))
        return rows


def colorization_loss(logits: torch.Tensor, bins: torch.Tensor, soft: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Rebalanced multinomial cross-entropy with soft targets (Zhang et al. 2016, eq. 2).

    ``L = -1/(B h w) sum_{b,h,w} v_{bhw} sum_j soft_{bjhw} log softmax(logits_{bhw})[bins_{bjhw}]``
    (the paper sums over pixels; the mean keeps the scale independent of batch and size).

    Args:
        logits: float ``B x 313 x h x w``.
        bins, soft: the sparse soft encoding, int64 / float ``B x k x h x w``.
        weights: float ``B x h x w`` rebalancing weights v.
    """
    logp = F.log_softmax(logits.float(), dim=1).gather(1, bins)
    return -(weights * (soft * logp).sum(1)).mean()


def colorization_regression_loss(pred: torch.Tensor, ab: torch.Tensor,
                                 kind: str = "smooth_l1",
                                 color: torch.Tensor | None = None) -> torch.Tensor:
    """Mean smooth-L1 (beta 1) or squared error between ``pred`` (``B x 2 x h x w``, ab / 100)
    and the true ``ab / 100``, over every element; ``color`` (float ``B``, 0 or 1) leaves the
    grayscale images' elements out of the sum, not the count (a batch of them: 0, no NaN)."""
    target = ab / AB_SCALE
    if kind == "l2":
        per = F.mse_loss(pred.float(), target, reduction="none")
    else:
        per = F.smooth_l1_loss(pred.float(), target, reduction="none")
    if color is not None:
        per = per * color[:, None, None, None]
    return per.mean()


def _reduce_ab(ab: torch.Tensor, side: int, stride: int, sampling: str) -> torch.Tensor:
    """``B x 2 x H x W`` ab -> ``B x 2 x side x side`` by point sampling or area averaging."""
    if sampling == "point":
        return ab[:, :, : side * stride : stride, : side * stride : stride].contiguous()
    return F.interpolate(ab, size=(side, side), mode="area")


def _compose(light: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    ab = F.interpolate(ab, size=light.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat([light, ab], 1))


def _single(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return inputs if isinstance(inputs, torch.Tensor) else inputs[0]


def _targets(batch: Batch) -> dict[str, torch.Tensor]:
    if not isinstance(batch.targets, dict) or "ab" not in batch.targets:
        raise ValueError(
            "batch.targets must be the colorization collator's dict (ab, bins, soft, weights). "
            f"Got {type(batch.targets).__name__}"
        )
    return batch.targets
