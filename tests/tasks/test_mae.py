"""MAE: the mask (count, seed, meta), the loss against the paper's formula, the encoder on
visible patches only, the sin-cos tables, the ConvNet (SimMIM-style) path, and a CLI run whose
exported encoder loads into a plain timm ViT."""

from __future__ import annotations

import math

import pytest
import timm
import torch

import sslpipe
import sslpipe.tasks.mae  # noqa: F401  (registers "mae" also where the registry does not list it)
from sslpipe.tasks.heads import patchify
from sslpipe.tasks.mae import mae_loss, random_patch_mask
from sslpipe.tasks.mae_model import MAEModel, sincos_pos_embed

TINY = {"size": 32, "patch_size": 8, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4}


def _vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 0, **kwargs}
    return timm.create_model("vit_tiny_patch16_224", **args)


def _images(n: int = 4, side: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, 5, 5, generator=g)
    return (torch.nn.functional.interpolate(low, size=side, mode="bilinear") * 255).round().to(
        torch.uint8)


@pytest.mark.parametrize(("n", "ratio"), [(16, 0.75), (196, 0.75), (64, 0.6), (10, 0.75)])
def test_mask_count_is_exact_per_image(n: int, ratio: float) -> None:
    mask = random_patch_mask(32, n, ratio, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (32, n)
    assert (mask.sum(1) == round(ratio * n)).all()
    assert len({tuple(row.tolist()) for row in mask}) > 1  # per image, not one for the batch


def test_mask_is_recorded_in_meta_and_a_seed_reproduces_it() -> None:
    a = sslpipe.create_collator("mae", seed=3, **TINY)(_images())
    b = sslpipe.create_collator("mae", seed=3, **TINY)(_images())
    c = sslpipe.create_collator("mae", seed=4, **TINY)(_images())
    mask = a.meta["mask"]
    assert mask.dtype == torch.bool and mask.shape == (4, 16)
    assert (mask.sum(1) == 12).all()  # round(0.75 * 16)
    assert torch.equal(mask, b.meta["mask"]) and not torch.equal(mask, c.meta["mask"])
    # the model's copy of the mask (a float grid in the inputs) is the same mask
    assert torch.equal(a.inputs[1].flatten(1) > 0.5, mask)
    # the targets are the patches of the normalised input image
    assert torch.equal(a.targets, patchify(a.inputs[0], 8))


def _formula(pred: list, target: list, mask: list, eps: float = 1e-6) -> float:
    """He et al. 2022 with norm_pix_loss, written out with Python floats."""
    total, count = 0.0, 0
    for b, rows in enumerate(target):
        for i, t in enumerate(rows):
            if not mask[b][i]:
                continue
            mean = sum(t) / len(t)
            var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)  # unbiased, as torch.var
            norm = [(v - mean) / math.sqrt(var + eps) for v in t]
            total += sum((p - v) ** 2 for p, v in zip(pred[b][i], norm)) / len(t)
            count += 1
    return total / count


def test_loss_is_the_papers_formula_on_a_hand_made_case() -> None:
    target = [[[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], [2.0, -2.0, 0.5, 0.0]],
              [[0.2, 0.4, 0.6, 0.8], [3.0, 0.0, 0.0, 0.0], [-1.0, 1.0, -1.0, 1.0]]]
    pred = [[[0.5, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0]],
            [[-1.0, -0.5, 0.5, 1.0], [2.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]]]
    mask = [[True, False, True], [False, True, True]]
    got = mae_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(mask))
    assert got.item() == pytest.approx(_formula(pred, target, mask), rel=1e-5)
    # without norm_pix_loss: the plain MSE of the masked patches
    plain = mae_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(mask), norm_pix=False)
    rows = [(p, t) for b in range(2) for i, (p, t) in enumerate(zip(pred[b], target[b]))
            if mask[b][i]]
    expected = sum(sum((x - y) ** 2 for x, y in zip(p, t)) / 4 for p, t in rows) / len(rows)
    assert plain.item() == pytest.approx(expected, rel=1e-6)


def test_loss_ignores_visible_patches() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 16, 12, generator=g), torch.randn(3, 16, 12, generator=g)
    mask = random_patch_mask(3, 16, 0.75, g)
    base = mae_loss(pred, target, mask)
    visible = ~mask[..., None]
    changed = mae_loss(pred + 5 * visible, target + torch.randn(3, 16, 12) * visible, mask)
    assert torch.equal(base, changed)
    masked = mae_loss(pred, target + torch.randn(3, 16, 12) * mask[..., None], mask)
    assert not torch.equal(base, masked)


def test_encoder_sees_only_the_visible_patches() -> None:
    task = sslpipe.create_task("mae", seed=0, **TINY)
    batch = task.collator(_images())
    vit = _vit()
    model = task.build(vit)
    seen: list[tuple[int, ...]] = []
    vit.blocks[0].register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    out = model(batch.inputs)
    assert seen == [(4, 1 + 16 - 12, 192)]  # the class token and the 4 visible patches
    assert out.shape == (4, 16, 8 * 8 * 3)
    # the encoder's output does not depend on what the masked patches hold
    images, grid = batch.inputs
    hole = grid.repeat_interleave(8, 2).repeat_interleave(8, 3)
    noisy = images + 3 * torch.randn_like(images) * hole
    model.eval()
    with torch.no_grad():
        mask = batch.meta["mask"]
        torch.testing.assert_close(model.encode(images, mask), model.encode(noisy, mask))
        assert not torch.allclose(model.encode(images, mask),
                                  model.encode(images + 3 * (1 - hole), mask))
    loss = task.loss(out, batch)
    loss.backward()
    assert vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_pos_embed_tables_are_the_official_sincos() -> None:
    table = sincos_pos_embed(8, 3, prefix=1)
    assert table.shape == (1, 10, 8) and torch.equal(table[0, 0], torch.zeros(8))
    # patch (row 2, column 1): first half encodes the column, second half the row
    omega = [1.0, 1.0 / 10000 ** 0.5]
    row, col = 2, 1
    expected = ([math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
                + [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega])
    torch.testing.assert_close(table[0, 1 + row * 3 + col], torch.tensor(expected))
    vit = _vit()
    model = MAEModel(vit, 8, 4, decoder_dim=32, decoder_depth=1, decoder_heads=4)
    assert torch.equal(vit.pos_embed.detach(), sincos_pos_embed(192, 4, prefix=1))
    assert not vit.pos_embed.requires_grad
    assert model.decoder_pos_embed.shape == (1, 17, 32)


def test_register_tokens_and_no_class_token_vits() -> None:
    task = sslpipe.create_task("mae", seed=0, **TINY)
    batch = task.collator(_images())
    for kwargs in ({"reg_tokens": 2}, {"class_token": False, "global_pool": "avg"},
                   {"no_embed_class": True}):
        vit = _vit(**kwargs)
        model = task.build(vit)
        tokens = model.encode(batch.inputs[0], batch.meta["mask"])
        assert tokens.shape == (4, vit.num_prefix_tokens + 4, 192), kwargs
        assert model(batch.inputs).shape == (4, 16, 192)


def test_a_vit_of_another_patch_grid_is_refused_with_the_fix() -> None:
    task = sslpipe.create_task("mae", size=32, patch_size=16)
    with pytest.raises(ValueError, match="patch_size=8"):
        task.build(_vit())


def test_convnets_get_the_simmim_masked_input() -> None:
    task = sslpipe.create_task("mae", seed=0, size=64)
    batch = task.collator(_images(2, 72))
    torch.manual_seed(0)
    model = task.build(timm.create_model("resnet18", num_classes=0)).eval()
    images, grid = batch.inputs
    hole = grid.repeat_interleave(16, 2).repeat_interleave(16, 3)
    with torch.no_grad():
        out = model(batch.inputs)
        # the masked patches are replaced by the mask token: their pixels change nothing
        again = model((images + 5 * torch.randn_like(images) * hole, grid))
    assert out.shape == (2, 16, 16 * 16 * 3)
    torch.testing.assert_close(out, again)
    assert torch.isfinite(task.loss(out, batch))


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="size"):
        sslpipe.create_task("mae", size=30, patch_size=8)
    with pytest.raises(ValueError, match="mask_ratio"):
        sslpipe.create_task("mae", mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_dim"):
        sslpipe.create_task("mae", decoder_dim=30, decoder_heads=4)


def test_cli_trains_a_tiny_vit_and_its_encoder_loads_into_plain_timm(tmp_path) -> None:
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from sslpipe.cli import main
    from sslpipe.data import sample_path

    out = tmp_path / "run"
    args = ["train", "mae", "--data", sample_path("train"), "--arch", "vit_tiny_patch4_32",
            "--batch-size", "8", "--epochs", "1", "--max-steps", "2", "--optimizer", "adamw",
            "--lr", "1e-4", "-o", "patch_size=4", "-o", "decoder_dim=32",
            "-o", "decoder_depth=1", "-o", "decoder_heads=4", "--backend", "cpu",
            "--num-workers", "0", "--out", str(out), "--no-progress", "--no-probe"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    state = load_file(str(out / "backbone.safetensors"))
    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0)
    plain.load_state_dict(state)  # strict: every key of a plain timm ViT, nothing else
    assert torch.equal(plain.pos_embed, sincos_pos_embed(192, 8, prefix=1))
