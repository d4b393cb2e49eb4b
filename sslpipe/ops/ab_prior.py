"""The class-rebalancing prior of the quantised ab space (Zhang, Isola & Efros, ECCV 2016).

Colorization's loss weighs each pixel by how rare its colour is (sec. 2.2): the prior ``p`` over
the 313 ab bins (:func:`sslpipe.ops.ab_bins`) of some images, smoothed, mixed with the uniform
distribution and inverted (:func:`rebalance_weights`). The authors estimate ``p`` on ImageNet
(their ``prior_probs.npy``, which :func:`load_ab_prior` reads, as the bins are theirs, in
their order); :func:`default_ab_prior` is a data-free stand-in and :func:`estimate_ab_prior`
measures it on your images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from sslpipe.ops.images import collect
from sslpipe.ops.lab import NUM_AB_BINS, ab_bins, nearest_ab_bin, rgb_to_lab

DEFAULT_PRIOR_SCALE = 10.0
Prior = str | Sequence[float] | torch.Tensor | None


def rebalance_weights(prior: torch.Tensor, rebalance: float = 0.5,
                      sigma: float = 5.0) -> torch.Tensor:
    """Class-rebalancing weight of each bin (Zhang et al. 2016, eq. 3-4), float ``313``.

    The prior p is smoothed with a Gaussian of width ``sigma`` over the bin centres (p~), then
    ``w ~ ((1 - lambda) p~ + lambda / Q)^-1``, scaled so that ``sum_q p~_q w_q = 1`` (the
    expected weight of a pixel under the prior is 1).
    """
    centres = ab_bins().double()
    p = prior.double() / prior.double().sum()
    kernel = torch.exp(-torch.cdist(centres, centres).pow(2) / (2 * sigma**2))
    smooth = kernel @ p
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1 - rebalance) * smooth + rebalance / NUM_AB_BINS)
    return (w / (smooth * w).sum()).float()


def default_ab_prior() -> torch.Tensor:
    """The default bin prior, float ``313`` summing to 1: ``p_q ~ exp(-|c_q| / 10)``.

    Natural photos are mostly unsaturated: a density decaying with chroma ``|ab|``, with a mean
    chroma of 20 (2 x the scale), is a data-free stand-in for the paper's ImageNet prior. For
    your own data, estimate it with :func:`estimate_ab_prior` and pass it as ``prior=``.
    """
    p = torch.exp(-ab_bins().norm(dim=1) / DEFAULT_PRIOR_SCALE)
    return p / p.sum()


def estimate_ab_prior(batches: Iterable[Any], max_batches: int | None = None) -> torch.Tensor:
    """Empirical ab bin prior of some images: float ``313``, the fraction of pixels whose nearest
    bin is q.

    Args:
        batches: an iterable of anything a collator takes (uint8 ``B x 3 x H x W`` tensors or
            lists of samples: PIL, numpy, tensors, encoded bytes, ``(image, label)``).
        max_batches: stop after this many batches.

    Save it with ``torch.save(prior, "prior.pt")`` and pass ``prior="prior.pt"``.
    """
    counts = torch.zeros(NUM_AB_BINS, dtype=torch.float64)
    for i, samples in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        images = collect(samples)
        batch = images.images
        singles = [] if isinstance(batch, torch.Tensor) else [im[None] for im in batch
                                                              if isinstance(im, torch.Tensor)]
        for im in ([batch] if isinstance(batch, torch.Tensor) else singles):
            ab = rgb_to_lab(im.float() / 255.0)[:, 1:]
            counts += torch.bincount(nearest_ab_bin(ab).flatten().cpu(),
                                     minlength=NUM_AB_BINS).double()
    if counts.sum() == 0:
        raise ValueError("batches: expected at least one batch of images. Got none")
    return (counts / counts.sum()).float()


def load_ab_prior(prior: Prior) -> torch.Tensor:
    """The ``prior=`` option as a float ``313`` probability vector (None: the default)."""
    if prior is None:
        return default_ab_prior()
    if isinstance(prior, str):
        try:
            if prior.endswith(".npy"):
                import numpy as np

                values = torch.from_numpy(np.load(prior))
            else:
                values = torch.load(prior, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"prior: cannot read {prior!r} (.pt or .npy expected): {err}") from err
    else:
        values = torch.as_tensor(prior)
    values = values.double().flatten()
    if values.numel() != NUM_AB_BINS or not bool(torch.isfinite(values).all()) or (
        bool((values < 0).any()) or float(values.sum()) <= 0
    ):
        raise ValueError(
            f"prior must hold {NUM_AB_BINS} non-negative finite numbers with a positive sum. "
            f"Got {values.numel()} values from {prior if isinstance(prior, str) else 'a sequence'}"
        )
    return (values / values.sum()).float()
