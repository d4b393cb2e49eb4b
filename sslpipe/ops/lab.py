"""sRGB <-> CIE L*a*b* (D65 white, 2 degree observer), batched and device-agnostic.

The constants follow ``skimage.color.rgb2lab`` / ``lab2rgb`` (the reference the tests compare
against): sRGB gamma, the sRGB-to-XYZ matrix of IEC 61966-2-1 and the CIE 1976 L*a*b*
function with its linear segment below ``(6/29)^3``. L is in [0, 100]; a and b of sRGB
colours lie in about [-86, 98] and [-108, 94].

It also holds the quantised ab space of Zhang, Isola & Efros (ECCV 2016): :func:`ab_bins` (the
authors' 313 in-gamut centres of a grid of 10, in their order), :func:`encode_ab` (soft
encoding on the nearest bins),
:func:`nearest_ab_bin` and :func:`decode_ab` (the annealed mean).
"""

from __future__ import annotations

import functools

import torch

# Linear sRGB -> XYZ (rows X, Y, Z), as skimage.color.xyz_from_rgb.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # (6/29)^3, rounded as in CIE 15 and skimage
_KAPPA = 7.787  # slope of the linear segment, (29/6)^2 / 3 rounded likewise


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB to CIE L*a*b*.

    Args:
        x: float ``B x 3 x H x W`` (or ``3 x H x W``) sRGB in [0, 1], any device.

    Returns:
        float tensor of the same shape (float32 for half/bfloat16 inputs): channel 0 is L in
        [0, 100], channels 1 and 2 are a and b (about [-86, 98] and [-108, 94] for sRGB).
    """
    _check_image("x", x)
    x = _working_float(x)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4, x / 12.92)
    xyz = _apply_matrix(_matrix(_XYZ_FROM_RGB, x), linear)
    white = torch.tensor(_D65_WHITE, dtype=x.dtype, device=x.device).view(3, 1, 1)
    t = xyz / white
    # clamp_min keeps the cube root's gradient finite where the linear branch is taken
    f = torch.where(t > _EPSILON, t.clamp_min(_EPSILON) ** (1.0 / 3.0), _KAPPA * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* to sRGB, clamped to [0, 1] (the inverse of :func:`rgb_to_lab`).

    Args:
        lab: float ``B x 3 x H x W`` (or ``3 x H x W``): L in [0, 100], a and b in about
            [-128, 127]. Colours outside the sRGB gamut are clipped channel-wise.

    Returns:
        float sRGB of the same shape, in [0, 1].
    """
    _check_image("lab", lab)
    lab = _working_float(lab)
    l, a, b = lab.unbind(-3)
    fy = (l + 16.0) / 116.0
    # negative Z has no physical meaning; skimage clips it the same way
    f = torch.stack((fy + a / 500.0, fy, (fy - b / 200.0).clamp_min(0)), dim=-3)
    t = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _KAPPA)
    xyz = t * torch.tensor(_D65_WHITE, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    rgb_from_xyz = torch.linalg.inv(_matrix(_XYZ_FROM_RGB, lab).double()).to(lab.dtype)
    linear = _apply_matrix(rgb_from_xyz, xyz)
    srgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear
    )
    return srgb.clamp(0.0, 1.0)


def _check_image(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float B x 3 x H x W or 3 x H x W tensor. Got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor. Got {x.dtype}")


def _working_float(x: torch.Tensor) -> torch.Tensor:
    # The cube root and gamma curves lose too much in 16-bit floats.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _matrix(rows: tuple[tuple[float, ...], ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", m, x)


AB_GRID = 10.0
NUM_AB_BINS = 313

# The authors' in-gamut bins (``resources/pts_in_hull.npy`` of richzhang/colorization), as
# the run of b centres each a column holds: (a, first b, last b), every 10. Read in this
# order, a then b, the columns give the 313 centres index for index as the authors' file, so a
# prior, class weights or a classifier made with the official files line up with sslpipe's.
_AUTHORS_AB_COLUMNS = (
    (-90, 50, 90), (-80, 20, 90), (-70, 0, 90), (-60, -20, 90), (-50, -30, 100),
    (-40, -40, 100), (-30, -50, 100), (-20, -50, 100), (-10, -60, 100), (0, -70, 100),
    (10, -80, 90), (20, -80, 90), (30, -90, 90), (40, -100, 90), (50, -100, 80),
    (60, -110, 80), (70, -110, 80), (80, -110, 70), (90, -110, 70), (100, -90, 0),
)


def ab_bins() -> torch.Tensor:
    """The 313 in-gamut ab bin centres of Zhang et al. (2016): float32 ``313 x 2`` (a, b).

    Row ``q`` is bin ``q`` of the authors' ``pts_in_hull.npy`` (richzhang/colorization), in
    their order: sorted by a, then b, on a grid of 10 ab units. The set spans a in [-90, 100]
    and b in [-110, 100]; every sRGB colour's nearest centre is within 5 * sqrt(2) of it.
    Keeping the authors' set and order (rather than deriving one from the sRGB gamut, which
    gives a set that differs in 4 centres and shifts 111 indices) lets priors, rebalancing
    weights and classifier layers from the official release be used as they are.
    """
    return _ab_bins().clone()


def nearest_ab_bin(ab: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the 313 bins for each pixel: int64 ``B x h x w``.

    Args:
        ab: float ``B x 2 x h x w`` (a, b), any device.
    """
    index, _ = encode_ab(ab, neighbours=1)
    return index[:, 0]


def encode_ab(
    ab: torch.Tensor, neighbours: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft encoding of ab values on their nearest bins (Zhang et al. 2016, sec. 2.1).

    Args:
        ab: float ``B x 2 x h x w``; values are clamped to [-125, 125].
        neighbours: how many nearest bins share each pixel, 1..36 (the paper's text says 5;
            the authors' training code, ``NNEncLayer``, uses 10).
        sigma: width of the Gaussian kernel on the distance to each bin (5 in the paper).

    Returns:
        ``(index, weight)``: int64 ``B x k x h x w`` bin indices in 0..312, nearest first, and
        float32 ``B x k x h x w`` weights ``exp(-d^2 / 2 sigma^2)`` normalised to sum to 1.
        The dense target ``Z[q] = sum_j weight[j] [index[j] == q]`` is never materialised.
    """
    if ab.ndim != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must be B x 2 x h x w. Got shape {tuple(ab.shape)}")
    if not 1 <= neighbours <= 36:
        raise ValueError(f"neighbours must be in 1..36. Got {neighbours}")
    device = ab.device
    table, lo = _bin_table(device)
    ab = ab.float().clamp(-125.0, 125.0)
    # Only the grid centres in a window around each pixel can be among its nearest in-gamut
    # bins: the window reaches ``reach`` grid steps beyond the pixel's cell on every side,
    # so any bin outside it is farther than ``reach * AB_GRID``. Pixels whose k-th nearest
    # bin in the window is farther than that (ab near or outside the gamut's edge, or many
    # neighbours) search all bins.
    reach = 2 if neighbours <= 5 else 3
    side = 2 * reach + 2
    offsets = torch.arange(-reach, reach + 2, device=device, dtype=torch.float32)
    base = torch.floor(ab / AB_GRID)
    ga = (base[:, 0, None, None] + offsets.view(1, side, 1, 1, 1)).expand(-1, -1, side, -1, -1)
    gb = (base[:, 1, None, None] + offsets.view(1, 1, side, 1, 1)).expand(-1, side, -1, -1, -1)
    ga, gb = ga.flatten(1, 2), gb.flatten(1, 2)  # B x side^2 x h x w
    d2 = (ab[:, :1] - ga * AB_GRID) ** 2 + (ab[:, 1:] - gb * AB_GRID) ** 2
    ia = (ga - lo).long().clamp(0, table.shape[0] - 1)
    ib = (gb - lo).long().clamp(0, table.shape[1] - 1)
    bins = table[ia, ib]
    d2 = torch.where(bins >= 0, d2, torch.full_like(d2, float("inf")))
    d2, pick = d2.topk(neighbours, dim=1, largest=False)
    index = bins.gather(1, pick)
    far = d2[:, -1] > (reach * AB_GRID) ** 2
    if bool(far.any()):
        centres = _ab_bins().to(device)
        where = far.nonzero(as_tuple=True)
        points = ab.permute(0, 2, 3, 1)[where]
        d2_far, index_far = torch.cdist(points, centres).pow(2).topk(neighbours, largest=False)
        d2 = d2.permute(0, 2, 3, 1).index_put(where, d2_far).permute(0, 3, 1, 2)
        index = index.permute(0, 2, 3, 1).index_put(where, index_far).permute(0, 3, 1, 2)
    weight = torch.softmax(-d2 / (2.0 * sigma**2), dim=1)
    return index, weight


def decode_ab(logits: torch.Tensor, T: float = 0.38) -> torch.Tensor:
    """Annealed mean of a predicted ab distribution (Zhang et al. 2016, eq. 5).

    ``H(Z) = sum_q softmax(logits / T)_q * centre_q``: ``T=1`` is the mean of the predicted
    distribution, ``T -> 0`` its mode; 0.38 is the paper's compromise.

    Args:
        logits: float ``B x 313 x h x w`` (unnormalised log-probabilities).
        T: temperature > 0.

    Returns:
        float ``B x 2 x h x w`` ab values.
    """
    if T <= 0:
        raise ValueError(f"T must be > 0. Got {T}")
    bins = _ab_bins().to(logits.device)
    if logits.ndim != 4 or logits.shape[1] != bins.shape[0]:
        raise ValueError(
            f"logits must be B x {bins.shape[0]} x h x w. Got shape {tuple(logits.shape)}"
        )
    p = torch.softmax(logits.float() / T, dim=1)
    return torch.einsum("bqhw,qc->bchw", p, bins)


@functools.lru_cache(maxsize=1)
def _ab_bins() -> torch.Tensor:
    columns = [
        torch.tensor([(a, b) for b in range(lo, hi + 1, int(AB_GRID))], dtype=torch.float32)
        for a, lo, hi in _AUTHORS_AB_COLUMNS
    ]
    return torch.cat(columns)


@functools.lru_cache(maxsize=8)
def _bin_table(device: torch.device) -> tuple[torch.Tensor, int]:
    """Grid index -> bin index (-1 outside the gamut), padded so 8 x 8 windows stay inside."""
    bins = (_ab_bins() / AB_GRID).round().long()
    lo = int(bins.min()) - 4
    hi = int(bins.max()) + 4
    table = torch.full((hi - lo + 1, hi - lo + 1), -1, dtype=torch.long)
    table[bins[:, 0] - lo, bins[:, 1] - lo] = torch.arange(bins.shape[0])
    return table.to(device), lo
