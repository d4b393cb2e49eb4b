"""Batched random augmentations with per-sample parameters: colour, grayscale, blur, solarize.

Every random op has a probability ``p``, draws per-sample (never same-on-batch) parameters from
a CPU ``torch.Generator`` (None: torch's global RNG) and returns them as a dict of tensors, as
kornia's parameter generators do, so a collator can record them in ``Batch.meta``.

Colour is linear (docs/design.md, "Where the time goes"): brightness, contrast, saturation, hue and
grayscale become one affine ``B x 3 x 4`` matrix per image acting on RGB in [0, 1], which
:func:`sslpipe.ops.color.normalize` fuses with the mean/std normalisation in one batched matmul.
Differences from torchvision's ``ColorJitter`` (which works on one image at a time):

* hue is a rotation of the chroma plane in YIQ (as DALI's colour twist does), not a shift of
  the HSV hue: the same hue for grays and small shifts, a close approximation elsewhere;
* values are clamped to [0, 1] once, after the whole colour transform, not after each step;
* the mean gray level that contrast blends towards is computed from the image's mean colour
  carried through the preceding steps (exact for the linear ops, without the clamps);
* the order of the four steps is a random permutation per image (torchvision draws one per
  call, which for a per-image pipeline is the same thing).

The blur (:func:`sample_blur`, :func:`gaussian_blur`) lives in :mod:`sslpipe.ops.blur`.
:func:`augment_views` chains these ops into the view pipeline of SimCLR, VICReg, BYOL and DINO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sslpipe.devices import constant
from sslpipe.ops.blur import gaussian_blur, sample_blur
from sslpipe.ops.color import normalize
from sslpipe.ops.geometry import hflip

# the blur lives in sslpipe.ops.blur; re-exported for the view pipeline's users
__all__ = ["AVERAGE_GRAY_WEIGHTS", "BRIGHTNESS", "CONTRAST", "GRAY_WEIGHTS", "HUE", "SATURATION",
           "ViewAugment", "apply_view", "augment_views", "color_jitter_matrix", "compose",
           "gaussian_blur", "grayscale_matrix", "hue_matrix", "identity_matrix", "mean_rgb",
           "sample_blur", "sample_color_jitter", "sample_grayscale", "sample_solarize",
           "sample_view", "solarize"]

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# The plain average of R, G and B: the gray of Noroozi et al.'s jigsaw code and counting paper.
AVERAGE_GRAY_WEIGHTS = (1 / 3, 1 / 3, 1 / 3)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# Step ids of the jitter order (values of ``jitter_order``).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def sample_color_jitter(
    n: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image colour jitter parameters, with torchvision's ranges.

    Factors are uniform in ``[max(0, 1 - s), 1 + s]`` for brightness, contrast and saturation,
    the hue shift uniform in ``[-hue, hue]`` (fraction of a turn, ``hue <= 0.5``). Images not
    selected (probability ``1 - p``) get the identity (factors 1, hue 0).

    Returns:
        ``jitter`` (bool ``B``), ``brightness``, ``contrast``, ``saturation``, ``hue`` (float32
        ``B``) and ``jitter_order`` (int64 ``B x 4``, step ids BRIGHTNESS..HUE in applied order).
    """
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation), ("hue", hue)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0. Got {value!r}")
    if hue > 0.5:
        raise ValueError(f"hue must be in [0, 0.5]. Got {hue!r}")
    applied = torch.rand(n, generator=generator) < p
    u = torch.rand(n, 4, generator=generator)
    lo = torch.tensor([max(0.0, 1 - brightness), max(0.0, 1 - contrast),
                       max(0.0, 1 - saturation), -hue])
    hi = torch.tensor([1 + brightness, 1 + contrast, 1 + saturation, hue])
    factors = lo + u * (hi - lo)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    factors = torch.where(applied[:, None], factors, identity)
    order = torch.rand(n, 4, generator=generator).argsort(1)
    return {
        "jitter": applied,
        "brightness": factors[:, 0],
        "contrast": factors[:, 1],
        "saturation": factors[:, 2],
        "hue": factors[:, 3],
        "jitter_order": order,
    }


def color_jitter_matrix(params: dict[str, torch.Tensor], mean_rgb: torch.Tensor) -> torch.Tensor:
    """The ``B x 3 x 4`` affine colour matrices (on RGB in [0, 1]) of :func:`sample_color_jitter`.

    Args:
        params: the dict from :func:`sample_color_jitter` (on the CPU).
        mean_rgb: float ``B x 3`` mean colour of each image in [0, 1] (see :func:`mean_rgb`),
            which contrast needs for the image's mean gray level.

    Returns:
        float32 ``B x 3 x 4`` on ``mean_rgb``'s device. The parameter-only matrices are made
        on the CPU and copied without waiting; only contrast, which depends on the pixels, is
        composed on the device, so a GPU batch costs no device sync.
    """
    n = params["brightness"].shape[0]
    device = mean_rgb.device
    eye = identity_matrix(n)
    w = torch.tensor(GRAY_WEIGHTS)
    brightness = eye * params["brightness"].view(n, 1, 1)
    saturation = _affine(
        params["saturation"].view(n, 1, 1) * torch.eye(3)
        + (1 - params["saturation"]).view(n, 1, 1) * w.expand(n, 3, 3)
    )
    fixed = torch.stack([brightness, saturation, hue_matrix(params["hue"])], 1)  # B x 3 x 3 x 4
    fixed = fixed.to(device, non_blocking=True)
    c = params["contrast"].to(device, non_blocking=True).view(n, 1, 1)
    order = params["jitter_order"].to(device, non_blocking=True)
    w = w.to(device, non_blocking=True)
    rows = torch.arange(n, device=device)
    eye = eye.to(device, non_blocking=True)
    m = eye
    mean_h = torch.cat([mean_rgb.float(), torch.ones(n, 1, device=device)], 1)
    for k in range(4):
        # contrast depends on the mean gray of the image as transformed so far
        gray = (w * torch.bmm(m, mean_h[:, :, None])[:, :, 0]).sum(1)
        contrast = eye * c
        contrast[:, :, 3] = (1 - c[:, 0]) * gray[:, None]
        # step ids: BRIGHTNESS 0, CONTRAST 1, SATURATION 2, HUE 3
        steps = torch.stack([fixed[:, 0], contrast, fixed[:, 1], fixed[:, 2]], 1)
        m = compose(steps[rows, order[:, k]], m)
    return m


def sample_grayscale(n: int, p: float, generator: torch.Generator | None = None
                     ) -> dict[str, torch.Tensor]:
    """``{"grayscale": bool B}``: which images become gray (probability ``p``)."""
    return {"grayscale": torch.rand(n, generator=generator) < p}


def grayscale_matrix(gray: torch.Tensor,
                     weights: tuple[float, float, float] = GRAY_WEIGHTS) -> torch.Tensor:
    """``B x 3 x 4`` matrices: the gray ``weights . (R, G, B)`` in all channels where ``gray``
    (bool ``B``), else identity. Default weights: ITU-R 601 luma (:data:`GRAY_WEIGHTS`)."""
    n = gray.shape[0]
    to_gray = _affine(torch.tensor(weights, dtype=torch.float32).expand(n, 3, 3))
    return torch.where(gray.cpu().view(n, 1, 1), to_gray, identity_matrix(n))  # CPU params


def hue_matrix(hue: torch.Tensor) -> torch.Tensor:
    """``B x 3 x 4`` matrices rotating the chroma (IQ) plane of YIQ by ``hue[i]`` turns."""
    theta = -2 * math.pi * hue.double().cpu()
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return _affine((_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).float())


def identity_matrix(n: int) -> torch.Tensor:
    """``n`` identity ``3 x 4`` affine colour matrices."""
    return torch.eye(3, 4).repeat(n, 1, 1)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Affine ``B x 3 x 4`` matrices of ``outer(inner(x))``."""
    lin = torch.bmm(outer[:, :, :3], inner[:, :, :3])
    shift = torch.bmm(outer[:, :, :3], inner[:, :, 3:]) + outer[:, :, 3:]
    return torch.cat([lin, shift], 2)


def mean_rgb(x: torch.Tensor, step: int = 4) -> torch.Tensor:
    """float ``B x 3`` mean colour in [0, 1] of uint8 ``B x 3 x H x W`` (every ``step``-th px)."""
    return x[:, :, ::step, ::step].float().mean((2, 3)) / 255.0


def sample_solarize(n: int, p: float, generator: torch.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
    """``{"solarize": bool B}``: which images are solarized (probability ``p``)."""
    return {"solarize": torch.rand(n, generator=generator) < p}


def solarize(
    x: torch.Tensor,
    mask: torch.Tensor,
    threshold: float = 0.5,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` in the images where ``mask`` (bool ``B``).

    ``x`` is float ``B x C x H x W`` in [0, 1], or normalized with ``mean``/``std`` (then the
    threshold and the inversion ``v -> 1 - v`` are carried into normalized units, so solarizing
    needs no denormalisation).
    """
    if not bool(mask.any()):
        return x
    c = x.shape[1]
    mean_t = constant(mean or (0.0,) * c, x.device).view(1, c, 1, 1)
    std_t = constant(std or (1.0,) * c, x.device).view(1, c, 1, 1)
    thr = (threshold - mean_t) / std_t
    flipped = (1 - 2 * mean_t) / std_t - x
    hit = (x >= thr) & mask.to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(hit, flipped, x)


@dataclass(frozen=True)
class ViewAugment:
    """One view's colour and blur policy (the crop is the collator's business).

    Attributes:
        flip: probability of a horizontal flip.
        jitter: ``(brightness, contrast, saturation, hue)`` strengths.
        jitter_p: probability of applying the colour jitter.
        grayscale: probability of converting to gray.
        blur: probability of a Gaussian blur; ``blur_sigma`` its sigma range in pixels,
            ``blur_kernel`` its (odd) number of taps.
        solarize: probability of solarizing (threshold 0.5).
    """

    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23
    solarize: float = 0.0


def sample_view(n: int, spec: ViewAugment, generator: torch.Generator | None
                ) -> dict[str, torch.Tensor]:
    """Every random parameter of :func:`apply_view` for ``n`` crops, drawn in a fixed order
    on the CPU: ``flip``, the jitter dict (:func:`sample_color_jitter`), ``grayscale``,
    ``blur_sigma``, ``solarize``."""
    params = {"flip": torch.rand(n, generator=generator) < spec.flip}
    params.update(sample_color_jitter(n, *spec.jitter, p=spec.jitter_p, generator=generator))
    params.update(sample_grayscale(n, spec.grayscale, generator))
    params.update(sample_blur(n, spec.blur, spec.blur_sigma, generator))
    params.update(sample_solarize(n, spec.solarize, generator))
    return params


def apply_view(
    x: torch.Tensor,
    spec: ViewAugment,
    params: dict[str, torch.Tensor],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur and solarize uint8 crops into a normalized view.

    Args:
        x: uint8 ``B x 3 x H x W`` crops (already at the output size), on any device.
        spec: the view's policy (the blur kernel size).
        params: from :func:`sample_view`, on the CPU.
        mean, std: normalisation of the float output.

    Returns:
        float32 ``B x 3 x H x W`` normalized (values within the normalized [0, 1] range).
    """
    x = hflip(x, params["flip"])
    gray = grayscale_matrix(params["grayscale"]).to(x.device, non_blocking=True)
    matrix = compose(gray, color_jitter_matrix(params, mean_rgb(x)))
    out = normalize(x, mean, std, matrix=matrix)
    lo = constant(tuple(-m / s for m, s in zip(mean, std)), out.device).view(1, 3, 1, 1)
    hi = constant(tuple((1 - m) / s for m, s in zip(mean, std)), out.device).view(1, 3, 1, 1)
    out = torch.clamp_(out, lo, hi)
    # blur is linear and its kernel sums to 1, so it commutes with the normalisation
    out = gaussian_blur(out, params["blur_sigma"], spec.blur_kernel)
    return solarize(out, params["solarize"], 0.5, mean, std)


def augment_views(
    x: torch.Tensor,
    spec: ViewAugment,
    generator: torch.Generator | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`sample_view` then :func:`apply_view`: the view and its parameters (CPU)."""
    params = sample_view(x.shape[0], spec, generator)
    return apply_view(x, spec, params, mean, std), params


def _affine(lin: torch.Tensor) -> torch.Tensor:
    return torch.cat([lin, torch.zeros(lin.shape[0], 3, 1, dtype=lin.dtype)], 2)
