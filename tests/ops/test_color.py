"""ops.color.normalize: the fused 3x4 matrix path equals the plain per-image computation."""

from __future__ import annotations

import torch

from sslpipe.ops.color import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize


def test_plain_normalize_matches_the_formula() -> None:
    x = torch.randint(0, 256, (2, 3, 5, 6), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize(x), (x / 255.0 - mean) / std, atol=1e-6)


def test_matrix_path_equals_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 4, 5), dtype=torch.uint8, generator=g)
    m = torch.randn(3, 3, 4, generator=g)
    ref = []
    for i in range(3):
        rgb = x[i].float().reshape(3, -1) / 255
        out = m[i, :, :3] @ rgb + m[i, :, 3:]
        ref.append(out.reshape(3, 4, 5))
    ref_t = (torch.stack(ref) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    assert torch.allclose(normalize(x, matrix=m), ref_t, atol=1e-5)
    identity = torch.eye(3, 4).expand(3, 3, 4)
    assert torch.allclose(normalize(x, matrix=identity), normalize(x), atol=1e-5)


def test_denormalize_inverts() -> None:
    x = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    assert torch.allclose(denormalize(normalize(x)[0]) * 255, x[0].float(), atol=1e-3)
