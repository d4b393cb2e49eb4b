"""VICReg: the loss against the paper's formula, the asymmetric views, options, the model."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from sslpipe import create_task
from sslpipe.tasks.vicreg import vicreg_loss


def test_vicreg_loss_hand_made_case():
    # B = 3, D = 2. Columns of z1: (0, 1, 2) and (0, 0, 3); z2 = z1 + 1 in the first column.
    z1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 3.0]])
    z2 = z1 + torch.tensor([1.0, 0.0])
    # invariance: mean squared difference over the 6 entries = 3 / 6
    inv = 0.5
    # variance: unbiased variances 1 and 3 in both branches
    v = (max(0.0, 1 - math.sqrt(1 + 1e-4)) + max(0.0, 1 - math.sqrt(3 + 1e-4))) / 2
    # covariance: centred columns (-1, 0, 1) and (-1, -1, 2): cov = 3 / 2; c = 2 * 1.5^2 / 2
    c = 2 * 1.5**2 / 2
    # the authors' released code averages the two variance terms; the paper's eq. (6) sums them
    expected = 25 * inv + 25 * (v + v) / 2 + 1 * (c + c)
    assert abs(float(vicreg_loss(z1, z2)) - expected) < 1e-5
    summed = 25 * inv + 25 * (v + v) + 1 * (c + c)
    assert abs(float(vicreg_loss(z1, z2, variance_terms="sum")) - summed) < 1e-5
    # small variances are pushed up: the hinge is active below std 1
    z = torch.tensor([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3]])
    std = torch.sqrt(z.var(0) + 1e-4)
    hinge = float((1 - std).clamp(min=0).mean())
    expected = 25 * hinge + 2 * (float(torch.cov(z.T)[0, 1]) ** 2 * 2 / 2)
    assert abs(float(vicreg_loss(z, z)) - expected) < 1e-5
    task = create_task("vicreg", variance_terms="sum")
    assert task.options.variance_terms == "sum"
    with pytest.raises(ValueError, match="variance_terms"):
        create_task("vicreg", variance_terms="max")


def test_vicreg_loss_gradient_and_errors():
    z1 = torch.randn(5, 4, requires_grad=True)
    z2 = torch.randn(5, 4)
    vicreg_loss(z1, z2, 1.0, 0.0, 0.0).backward()
    torch.testing.assert_close(z1.grad, 2 * (z1 - z2).detach() / 20)  # d mean((z1-z2)^2)
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="z1 and z2"):
        vicreg_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_asymmetric_views():
    task = create_task("vicreg", size=96, seed=0, blur_kernel=5)
    batch = task.collator(torch.randint(0, 256, (64, 3, 100, 100), dtype=torch.uint8))
    assert bool((batch.meta["view1_blur_sigma"] > 0).all())  # blur p = 1.0 on view 1
    assert int((batch.meta["view2_blur_sigma"] > 0).sum()) < 20  # p = 0.1 on view 2
    assert not bool(batch.meta["view1_solarize"].any())
    assert 0 < int(batch.meta["view2_solarize"].sum()) < 30  # p = 0.2
    hue = batch.meta["view1_hue"].abs()
    assert float(hue.max()) <= 0.1 and float(batch.meta["view1_saturation"].max()) <= 1.2


@pytest.mark.parametrize("options", [
    {"blur": (1.0,)}, {"solarize": (0.0, 2.0)}, {"jitter": (0.4, 0.4, 0.2, 0.7)},
    {"expander_dim": 0}, {"std_coeff": -1.0}, {"crop_ratio": (0.0, 1.0)},
])
def test_wrong_options_raise(options):
    with pytest.raises(ValueError):
        create_task("vicreg", **options)


def test_model_forward_backward():
    task = create_task("vicreg", size=32, seed=0, expander_dim=16)
    batch = task.collator(torch.randint(0, 256, (4, 3, 36, 40), dtype=torch.uint8))
    model = task.build(timm.create_model("resnet18", num_classes=0))
    z1, z2 = model(batch.inputs)
    assert z1.shape == (4, 16)
    loss = task.loss((z1, z2), batch)
    loss.backward()
    assert torch.isfinite(loss) and "embedding_std" in task.metrics((z1, z2), batch)
