"""The collator/task contract (docs/design.md), checked for every registered task.

Every task, present and future, must accept every input kind of the contract, return a Batch
with float inputs on the input's device, be reproducible with a seed, and train: its loss is a
finite scalar with gradients through a timm backbone.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import typing

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import sslpipe
from sslpipe import Batch
from sslpipe.registry import task_class

SIZE = 64
TASKS = sslpipe.list_tasks()


def _options(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(task_class(name).Options)}
    opts: dict = {"seed": 0}
    if "size" in fields:
        opts["size"] = SIZE
    return opts


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth random image: more like a photo than white noise
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _input_kinds() -> dict[str, object]:
    arrays = [_photo(72 + 8 * i, 96 - 6 * i, i) for i in range(4)]
    return {
        "pil": [Image.fromarray(a) for a in arrays],
        "pil_labeled": [(Image.fromarray(a), i) for i, a in enumerate(arrays)],
        "pil_gray": [Image.fromarray(a).convert("L") for a in arrays],
        "numpy_hwc": arrays,
        "numpy_labeled": [(a, i % 2) for i, a in enumerate(arrays)],
        "tensor_chw": [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays],
        "jpeg_bytes": [(_encode(a, "JPEG"), i) for i, a in enumerate(arrays)],
        "png_bytes": [_encode(a, "PNG") for a in arrays],
        "dict_samples": [{"jpg": _encode(a, "JPEG"), "cls": b"3"} for a in arrays],
        "uint8_batch": torch.from_numpy(np.stack([a[:72, :72] for a in arrays])).permute(
            0, 3, 1, 2
        ),
    }


INPUT_KINDS = _input_kinds()


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
@pytest.mark.parametrize("name", TASKS)
def test_every_input_kind_gives_a_valid_batch(name: str, kind: str) -> None:
    samples = INPUT_KINDS[kind]
    collator = sslpipe.create_collator(name, **_options(name))
    if name == "supervised" and kind not in (
        "pil_labeled",
        "numpy_labeled",
        "jpeg_bytes",
        "dict_samples",
    ):
        with pytest.raises(ValueError, match="label"):
            collator(samples)
        return
    batch = collator(samples)
    assert isinstance(batch, Batch)
    inputs = _tensors(batch.inputs)
    assert inputs, "a Batch must carry at least one input tensor"
    for x in inputs:
        assert x.dtype == torch.float32
        assert x.device.type == "cpu"
        assert torch.isfinite(x).all()
        assert x.ndim >= 4 and x.shape[-3] in (1, 3)
    for t in _tensors(batch.meta):
        assert isinstance(t, torch.Tensor)
    # B is the number of source images, whatever rows per image the inputs hold (RotNet's
    # four rotations, DINO's two global crops) and with or without labels
    assert batch.batch_size == 4
    assert batch.to("cpu").batch_size == 4
    assert collator.host_stage(samples).batch_size == 4
    labeled = kind in ("pil_labeled", "numpy_labeled", "jpeg_bytes", "dict_samples")
    if labeled:
        assert batch.labels is not None and batch.labels.dtype == torch.int64
        assert batch.labels.shape == (4,)
    elif name != "supervised":
        assert batch.labels is None


@pytest.mark.parametrize("name", TASKS)
def test_seed_reproduces_a_batch(name: str) -> None:
    samples = INPUT_KINDS["pil_labeled"]
    a = sslpipe.create_collator(name, **_options(name))(samples)
    b = sslpipe.create_collator(name, **_options(name))(samples)
    for x, y in zip(
        _tensors((a.inputs, a.targets, a.meta)), _tensors((b.inputs, b.targets, b.meta))
    ):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", TASKS)
def test_batch_moves_and_pins(name: str) -> None:
    batch = sslpipe.create_collator(name, **_options(name))(INPUT_KINDS["pil_labeled"])
    moved = batch.to("cpu", non_blocking=True)
    assert all(torch.equal(x, y) for x, y in zip(_tensors(moved.inputs), _tensors(batch.inputs)))
    if torch.cuda.is_available():
        assert all(t.is_pinned() for t in _tensors(batch.pin_memory().inputs))


@pytest.mark.parametrize("name", TASKS)
def test_loss_trains_a_timm_backbone(name: str) -> None:
    torch.manual_seed(0)
    task = sslpipe.create_task(name, **_options(name))
    batch = task.collator(INPUT_KINDS["pil_labeled"])
    backbone = timm.create_model("resnet18", num_classes=0)
    model = task.build(backbone)
    loss = task.loss(model(batch.inputs), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", TASKS)
def test_unknown_option_is_named(name: str) -> None:
    with pytest.raises(ValueError, match="not_an_option"):
        sslpipe.create_task(name, not_an_option=1)


@pytest.mark.parametrize("name", TASKS)
def test_every_option_of_the_wrong_type_is_named(name: str) -> None:
    """Every option, given a value of the wrong type (a word for a number, a number for a
    word), is a ValueError naming the option and the type expected, never a TypeError from
    deep inside the options' checks."""
    hints = typing.get_type_hints(task_class(name).Options)
    checked = 0
    for field in dataclasses.fields(task_class(name).Options):
        if field.name == "generator":
            continue
        takes_str = str in (hints[field.name], *typing.get_args(hints[field.name]))
        wrong = 7 if takes_str else "wrong"
        with pytest.raises(ValueError, match=rf"option {field.name} must be") as e:
            sslpipe.create_task(name, **{field.name: wrong})
        assert repr(wrong) in str(e.value)
        checked += 1
    assert checked > 0


def test_a_sequence_written_without_brackets_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match=r"-o crop_scale=\[0.2,1.0\]"):
        sslpipe.create_task("simclr", crop_scale="0.2,1.0")


@pytest.mark.parametrize("name", TASKS)
def test_bad_input_is_a_clear_value_error(name: str) -> None:
    collator = sslpipe.create_collator(name, **_options(name))
    with pytest.raises(ValueError, match="samples"):
        collator([])
    with pytest.raises(ValueError, match="float32"):
        collator(torch.zeros(2, 3, 80, 80))
    with pytest.raises(ValueError, match=r"samples\[1\]"):
        collator([INPUT_KINDS["numpy_hwc"][0], "not an image"])


@pytest.mark.parametrize("name", TASKS)
def test_too_small_image_names_the_sample(name: str) -> None:
    collator = sslpipe.create_collator(name, **_options(name))
    small = np.zeros((2, 2, 3), dtype=np.uint8)
    try:
        collator([(INPUT_KINDS["numpy_hwc"][0], 0), (small, 1)])
    except ValueError as err:
        assert "samples[1]" in str(err)


@pytest.mark.parametrize("name", TASKS)
def test_two_stages_equal_the_fused_collator(name: str) -> None:
    """Host stage (uint8, every parameter drawn) + device stage == the collator, exactly, also
    after the host batch crossed a process boundary as a DataLoader worker hands it over."""
    samples = INPUT_KINDS["jpeg_bytes"]
    fused = sslpipe.create_collator(name, **_options(name))(samples)
    collator = sslpipe.create_collator(name, **_options(name))
    host = collator.host_stage(samples)
    assert host.pixels and all(x.dtype == torch.uint8 for x in host.pixels.values())
    assert all(t.device.type == "cpu" for t in _tensors(host.meta))
    split = collator.device_stage(pickle.loads(pickle.dumps(host)))
    a = _tensors((fused.inputs, fused.targets, fused.labels, fused.meta))
    b = _tensors((split.inputs, split.targets, split.labels, split.meta))
    assert len(a) == len(b) and sorted(fused.meta) == sorted(split.meta)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # what crosses to the device: uint8 crops at most half the bytes of the float inputs
    assert host.nbytes * 2 <= sum(x.numel() * x.element_size() for x in _tensors(fused.inputs))


# Options the CUDA comparisons need: relative_patch's dropped channels are filled with noise
# drawn on the device (reproducible per device, not across devices).
CUDA_OPTIONS = {"relative_patch": {"chroma": "project"}}


@pytest.mark.gpu
@pytest.mark.parametrize("name", TASKS)
def test_device_stage_on_cuda_matches_the_cpu(name: str) -> None:
    """The same uint8 host batch finished on CUDA and on the CPU: equal up to float rounding."""
    collator = sslpipe.create_collator(name, **_options(name), **CUDA_OPTIONS.get(name, {}))
    host = collator.host_stage(INPUT_KINDS["pil_labeled"])
    cpu = collator.device_stage(host)
    gpu = collator.device_stage(host.pin_memory().to("cuda", non_blocking=True))
    a = _tensors((cpu.inputs, cpu.targets, cpu.labels, cpu.meta))
    b = _tensors((gpu.inputs, gpu.targets, gpu.labels, gpu.meta))
    assert len(a) == len(b) and all(y.is_cuda for y in b)
    for x, y in zip(a, b):
        y = y.cpu()
        if x.is_floating_point():
            assert (x - y).abs().max() <= 2e-3
        elif name == "colorization" and x.dtype == torch.int64:  # nearest bins: float ties
            assert (x == y).float().mean() >= 0.99
        else:
            assert torch.equal(x, y)


@pytest.mark.gpu
@pytest.mark.parametrize("name", TASKS)
def test_same_parameters_and_targets_on_cuda(name: str) -> None:
    """The whole collator on GPU images: parameters are drawn on the CPU, so one seed gives
    the same parameters and the pseudo-labels made of them on every device. Colorization's
    bins are made of the pixels, which GPU crops resample with another filter
    (``ops.geometry.resized_crop``): most of them agree."""
    images = INPUT_KINDS["uint8_batch"]
    cpu = sslpipe.create_collator(name, **_options(name))([(im, 0) for im in images])
    gpu = sslpipe.create_collator(name, **_options(name))([(im.cuda(), 0) for im in images])
    assert all(x.is_cuda and torch.isfinite(x).all() for x in _tensors(gpu.inputs))
    for a, b in zip(_tensors(cpu.meta), _tensors(gpu.meta)):
        assert torch.equal(a, b.cpu())
    for a, b in zip(_tensors(cpu.targets), _tensors(gpu.targets)):
        if a.dtype in (torch.int64, torch.bool):
            if name == "colorization":
                assert (a == b.cpu()).float().mean() >= 0.8
            else:
                assert torch.equal(a, b.cpu())
