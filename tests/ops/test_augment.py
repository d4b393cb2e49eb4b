"""Batched random augmentations: colour matrices, grayscale, blur, solarize, the view pipeline."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from sslpipe.ops.augment import (
    GRAY_WEIGHTS,
    ViewAugment,
    augment_views,
    color_jitter_matrix,
    compose,
    gaussian_blur,
    grayscale_matrix,
    hue_matrix,
    identity_matrix,
    mean_rgb,
    sample_blur,
    sample_color_jitter,
    sample_grayscale,
    solarize,
)
from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _images(n: int = 4, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _apply(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return normalize(x, ZERO, ONE, matrix=matrix)


def _reference_jitter(img: torch.Tensor, params: dict, i: int) -> torch.Tensor:
    """One image (float 3 x H x W in [0, 1]) through the four steps in order, no clamping."""
    w = torch.tensor(GRAY_WEIGHTS).view(3, 1, 1)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    x = img.clone()
    for step in params["jitter_order"][i].tolist():
        if step == 0:
            x = x * params["brightness"][i]
        elif step == 1:
            c = params["contrast"][i]
            x = x * c + (1 - c) * (x * w).sum(0).mean()
        elif step == 2:
            s = params["saturation"][i]
            x = x * s + (1 - s) * (x * w).sum(0, keepdim=True)
        else:
            t = -2 * torch.pi * params["hue"][i]
            y = torch.einsum("ij,jhw->ihw", yiq, x)
            i_, q_ = y[1].clone(), y[2].clone()
            y[1] = torch.cos(t) * i_ - torch.sin(t) * q_
            y[2] = torch.sin(t) * i_ + torch.cos(t) * q_
            x = torch.einsum("ij,jhw->ihw", torch.linalg.inv(yiq), y)
    return x


def test_zero_strength_jitter_is_identity():
    params = sample_color_jitter(5, 0.0, 0.0, 0.0, 0.0, p=1.0, generator=torch.Generator())
    m = color_jitter_matrix(params, torch.rand(5, 3))
    torch.testing.assert_close(m, identity_matrix(5))


def test_matrix_path_equals_per_image_reference():
    x = _images(6, 10)
    g = torch.Generator().manual_seed(3)
    params = sample_color_jitter(6, 0.8, 0.8, 0.8, 0.2, p=1.0, generator=g)
    m = color_jitter_matrix(params, mean_rgb(x, step=1))
    out = _apply(x, m)
    for i in range(6):
        ref = _reference_jitter(x[i].float() / 255, params, i)
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("step,factor,fn", [
    ("brightness", 0.6, TF.adjust_brightness),
    ("contrast", 0.5, TF.adjust_contrast),
    ("saturation", 0.3, TF.adjust_saturation),
])
def test_single_steps_match_torchvision_without_clipping(step, factor, fn):
    x = _images(3, 16)
    params = sample_color_jitter(3, 0.0, 0.0, 0.0, 0.0, generator=torch.Generator())
    params[step] = torch.full((3,), factor)
    out = _apply(x, color_jitter_matrix(params, mean_rgb(x, step=1)))
    # factors below 1 keep values inside [0, 1], where torchvision's clamps do nothing; its
    # luma weight for red is 0.2989, not 0.299
    torch.testing.assert_close(out, fn(x.float() / 255, factor), atol=1e-4, rtol=1e-4)


def test_not_applied_images_get_identity():
    g = torch.Generator().manual_seed(0)
    params = sample_color_jitter(64, 0.8, 0.8, 0.8, 0.2, p=0.5, generator=g)
    m = color_jitter_matrix(params, torch.rand(64, 3))
    off = ~params["jitter"]
    assert 0 < int(off.sum()) < 64
    torch.testing.assert_close(m[off], identity_matrix(int(off.sum())))


def test_grayscale_has_equal_channels_and_luma():
    x = _images(4, 8)
    gray = sample_grayscale(4, 1.0)["grayscale"]
    out = _apply(x, grayscale_matrix(gray))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 0], out[:, 2])
    luma = (x.float() / 255 * torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(out[:, 0], luma, atol=1e-5, rtol=1e-5)
    keep = grayscale_matrix(torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(keep, identity_matrix(2))


def test_hue_keeps_grays_and_compose_order():
    gray = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    out = _apply(gray, hue_matrix(torch.tensor([0.2, -0.4])))
    torch.testing.assert_close(out, gray.float() / 255, atol=1e-5, rtol=1e-5)
    a, b = hue_matrix(torch.tensor([0.1])), grayscale_matrix(torch.tensor([True]))
    x = _images(1, 4)
    torch.testing.assert_close(_apply(x, compose(b, a)), _apply((_apply(x, a) * 255), b))


def test_blur_constant_image_unchanged_and_impulse_is_gaussian():
    const = torch.full((2, 3, 20, 20), 0.3)
    torch.testing.assert_close(gaussian_blur(const, torch.tensor([1.5, 0.7]), 23), const)
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1.0
    out = gaussian_blur(impulse, torch.tensor([1.2]), 23)
    taps = torch.arange(-4, 5, dtype=torch.float32)  # radius ceil(3 * 1.2) = 4
    k = torch.exp(-(taps**2) / (2 * 1.2**2))
    k = k / k.sum()
    expected = torch.zeros(31, 31)
    expected[11:20, 11:20] = torch.outer(k, k)
    torch.testing.assert_close(out[0, 0], expected)
    assert abs(float(out.sum()) - 1.0) < 1e-6  # the mean is kept away from the borders


def test_blur_sigma_zero_is_untouched_and_bad_kernel_raises():
    x = torch.rand(3, 3, 10, 10)
    out = gaussian_blur(x, torch.tensor([0.0, 1.0, 0.0]), 5)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.allclose(out[1], x[1])
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(x, torch.ones(3), 4)
    params = sample_blur(1000, 0.5, (0.1, 2.0), torch.Generator().manual_seed(0))
    sigma = params["blur_sigma"]
    assert 400 < int((sigma > 0).sum()) < 600 and float(sigma.max()) <= 2.0


def test_solarize_on_unit_and_normalized_floats():
    x = torch.rand(3, 3, 6, 6)
    mask = torch.tensor([True, False, True])
    out = solarize(x, mask)
    torch.testing.assert_close(out[0], TF.solarize(x[0], 0.5))
    assert torch.equal(out[1], x[1])
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    back = denormalize(solarize(xn, mask, 0.5, mean, std), mean, std)
    torch.testing.assert_close(back, out, atol=1e-5, rtol=1e-5)


def test_augment_views_reproducible_and_in_range():
    x = _images(8, 16)
    spec = ViewAugment(blur=0.5, blur_kernel=5, solarize=0.5)
    a, pa = augment_views(x, spec, torch.Generator().manual_seed(1), IMAGENET_MEAN, IMAGENET_STD)
    b, pb = augment_views(x, spec, torch.Generator().manual_seed(1), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(a, b) and all(torch.equal(pa[k], pb[k]) for k in pa)
    unit = a * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(
        1, 3, 1, 1)
    assert float(unit.min()) >= -1e-5 and float(unit.max()) <= 1 + 1e-5
    gray, _ = augment_views(x, ViewAugment(grayscale=1.0), None, ZERO, ONE)
    torch.testing.assert_close(gray[:, 0], gray[:, 2])


def test_augment_views_identity_policy_is_flip_and_normalize():
    x = _images(6, 8)
    spec = ViewAugment(flip=0.5, jitter_p=0.0, grayscale=0.0)
    out, params = augment_views(x, spec, torch.Generator().manual_seed(2), ZERO, ONE)
    ref = torch.where(params["flip"].view(-1, 1, 1, 1), x.flip(-1), x).float() / 255
    torch.testing.assert_close(out, ref)


def test_wrong_jitter_arguments_raise():
    with pytest.raises(ValueError, match="hue"):
        sample_color_jitter(2, 0.4, 0.4, 0.4, 0.6)
    with pytest.raises(ValueError, match="brightness"):
        sample_color_jitter(2, -0.1, 0.4, 0.4, 0.1)
