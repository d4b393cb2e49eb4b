"""sRGB <-> Lab against scikit-image, and the quantised ab space of Zhang et al. 2016."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslpipe.ops import ab_bins, decode_ab, encode_ab, lab_to_rgb, nearest_ab_bin, rgb_to_lab

skcolor = pytest.importorskip("skimage.color")
skdata = pytest.importorskip("skimage.data")


def _photo(name: str) -> np.ndarray:
    return getattr(skdata, name)()[::4, ::4] / 255.0


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_rgb_to_lab_matches_skimage_on_photos(name):
    rgb = _photo(name)
    ref = skcolor.rgb2lab(rgb)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    assert np.abs(rgb_to_lab(x)[0].permute(1, 2, 0).numpy() - ref).max() < 1e-6  # float64
    assert np.abs(rgb_to_lab(x.float())[0].permute(1, 2, 0).numpy() - ref).max() < 2e-4


def test_rgb_to_lab_matches_skimage_on_random_pixels_and_inverts():
    rgb = np.random.default_rng(0).random((16, 16, 3))
    ref = skcolor.rgb2lab(rgb)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    lab = rgb_to_lab(x)
    assert np.abs(lab[0].permute(1, 2, 0).numpy() - ref).max() < 2e-4
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-4)
    sk_back = skcolor.lab2rgb(ref)
    ours_back = lab_to_rgb(torch.from_numpy(ref).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    assert np.abs(ours_back.numpy() - sk_back).max() < 1e-6


def test_lab_ranges_and_out_of_gamut_clamp():
    corners = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           dtype=torch.float64).T.reshape(1, 3, 1, 5)
    lab = rgb_to_lab(corners)[0, :, 0]
    assert lab[0, 0].abs() < 1e-9 and (lab[0, 1] - 100).abs() < 1e-3  # black, white
    assert lab[1:].min() > -128 and lab[1:].max() < 128
    wild = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)
    rgb = lab_to_rgb(wild)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert rgb_to_lab(torch.rand(3, 4, 4)).shape == (3, 4, 4)  # unbatched works too


def test_lab_rejects_bad_input():
    with pytest.raises(ValueError, match="x must be"):
        rgb_to_lab(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_ab_bins_are_313_grid_centres_covering_every_srgb_colour():
    bins = ab_bins()
    assert bins.shape == (313, 2)
    assert torch.equal(bins, (bins / 10).round() * 10)
    assert len({tuple(b) for b in bins.tolist()}) == 313
    # every colour of the RGB cube (coarse grid) has its nearest bin within half a diagonal
    g = torch.linspace(0, 1, 18)
    cube = torch.stack(torch.meshgrid(g, g, g, indexing="ij")).reshape(1, 3, 18, 324)
    ab = rgb_to_lab(cube)[:, 1:]
    nearest = bins[nearest_ab_bin(ab)].permute(0, 3, 1, 2)
    assert (nearest - ab).norm(dim=1).max() <= 5 * 2**0.5 + 1e-4


def test_ab_bins_are_the_authors_set_in_their_order():
    # Facts of the authors' pts_in_hull.npy (richzhang/colorization): sorted by a then b,
    # these many b centres per a column, these first and last bins, and the 4 centres where
    # a set derived from the sRGB gamut differs from theirs.
    bins = ab_bins()
    keys = [(int(a), int(b)) for a, b in bins.tolist()]
    assert keys == sorted(keys)
    columns = [sum(1 for a, _ in keys if a == column) for column in range(-90, 101, 10)]
    assert columns == [5, 8, 10, 12, 14, 15, 16, 16, 17, 18, 18, 18, 19, 20, 19, 20, 20, 19, 19, 10]
    assert keys[0] == (-90, 50) and keys[-1] == (100, 0)
    assert keys[120] == (0, 0)  # the neutral bin
    for present in [(100, 0), (40, 90), (100, -90), (-30, -50)]:
        assert present in keys
    for absent in [(80, 80), (110, -60), (-60, 100), (80, -120)]:
        assert absent not in keys


@pytest.mark.parametrize("neighbours", [1, 5, 10, 36])
def test_soft_encoding_matches_brute_force_for_any_neighbour_count(neighbours):
    bins = ab_bins().double()
    g = torch.Generator().manual_seed(3)
    ab = rgb_to_lab(torch.rand(2, 3, 6, 6, generator=g))[:, 1:]
    # the corners of the RGB cube sit on the gamut's edge, where the window search falls back
    corners = torch.tensor([[0, 0, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1]])
    edge = rgb_to_lab(corners.T.reshape(1, 3, 1, 6).float())[:, 1:].expand(1, 2, 6, 6)
    ab = torch.cat([ab, edge, torch.full((1, 2, 6, 6), -124.0)])
    index, weight = encode_ab(ab, neighbours=neighbours)
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2).double()
    d = (points[:, None] - bins[None]).norm(dim=-1)
    nearest = d.topk(neighbours, largest=False)
    got = index.permute(0, 2, 3, 1).reshape(-1, neighbours)
    # ties (equidistant bins) may come in either order: compare the distances, then the sets
    assert torch.allclose(d.gather(1, got), nearest.values, atol=1e-3)
    expected = torch.softmax(-nearest.values**2 / 50, dim=1).float()
    assert torch.allclose(weight.permute(0, 2, 3, 1).reshape(-1, neighbours), expected, atol=1e-5)


def test_soft_encoding_matches_brute_force_and_centres_encode_to_themselves():
    bins = ab_bins()
    ab = rgb_to_lab(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))[:, 1:]
    ab = torch.cat([ab, torch.full((1, 2, 8, 8), 124.0)])  # far outside the gamut too
    index, weight = encode_ab(ab)
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    d = (points[:, None].double() - bins[None].double()).norm(dim=-1)
    assert torch.equal(index.permute(0, 2, 3, 1).reshape(-1, 5), d.topk(5, largest=False).indices)
    assert torch.equal(weight.argmax(1), torch.zeros_like(weight[:, 0], dtype=torch.long))
    assert torch.equal(nearest_ab_bin(ab), index[:, 0])
    assert torch.allclose(weight.sum(1), torch.ones(3, 8, 8))
    d5 = d.topk(5, largest=False).values
    expected = torch.softmax(-d5**2 / 50, dim=1).float()
    assert torch.allclose(weight.permute(0, 2, 3, 1).reshape(-1, 5), expected, atol=1e-5)
    centres = bins.T.reshape(1, 2, 1, 313)
    assert torch.equal(nearest_ab_bin(centres)[0, 0], torch.arange(313))


def test_annealed_mean_limits():
    logits = torch.randn(2, 313, 3, 3, generator=torch.Generator().manual_seed(1))
    top = logits.argmax(1, keepdim=True)
    logits = logits.scatter_add(1, top, torch.ones_like(top, dtype=logits.dtype))  # clear mode
    bins = ab_bins()
    mode = bins[logits.argmax(1)].permute(0, 3, 1, 2)
    mean = torch.einsum("bqhw,qc->bchw", logits.softmax(1), bins)
    assert torch.allclose(decode_ab(logits, T=1.0), mean, atol=1e-4)
    assert torch.allclose(decode_ab(logits, T=1e-2), mode, atol=1e-3)
    with pytest.raises(ValueError, match="T must be > 0"):
        decode_ab(logits, T=0)
