"""``--dry-run``: the grid, the number of runs and what they will cost.

Training cost of a run = images it reads (``epochs x num_samples`` of the pretraining
manifest, or ``max_steps x batch_size`` when that is smaller) x the task's ``TASK_COST`` /
the images/s of a training step. Evaluation: linear and kNN extract features once per cell
(train + test images at ``FORWARD_SPEEDUP`` x the training rate: a forward pass without
backward); fine-tuning trains ``epochs`` over the train split (or ``steps`` batches) at the
training rate. With a label budget the train split counts the budget's images
(``round(P x n)`` or ``N x classes``), and with ``probe_seeds = K`` every seed extracts its own
subset's features and trains its own probe or fine-tune (the test features of a trained
checkpoint, and the features of a 100 % budget, are extracted once and cached; the random
baseline's change with each seed's init). A linear probe's fit costs ``6 x epochs x n_train x
D x classes`` floating-point operations at ``FIT_FLOPS``, ``D`` the probe's feature widths
summed over its layers (about ``pool`` per stage).

Images/s come, first, from the ``img_per_s`` that finished training runs of the same arch in
the study's output directory recorded; else from ``DEFAULT_IMG_PER_S``, measured per arch:

* ``cpu``: on this project's 2-core CPU, one thread, batch 64, a ResNet training step (forward,
  backward, SGD) at 32 px; shared machine, so figures vary by tens of percent;
* ``cuda``: one H100, bf16, channels-last (BASELINES.md).

While the data is not sharded yet, a pretraining set named like a subset rule (``30k``) counts
that many images and a downstream dataset with a common name (``cifar10``, ``svhn``, ...) its
usual split sizes (``TYPICAL_SIZES``); anything else is estimated as ``?``.

A rate measured at side ``s0`` is scaled by ``(s0 / s)**2`` to the task's input side ``s``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any

from sslpipe.study.grid import EvalCell, Grid, TrainCell
from sslpipe.study.spec import Study, resolve_data

# (device, arch, small_input) -> (images/s of a training step, image side it was measured at)
DEFAULT_IMG_PER_S: dict[tuple[str, str, bool], tuple[float, int]] = {
    ("cpu", "resnet18", False): (58.9, 32),
    ("cpu", "resnet18", True): (8.8, 32),
    ("cpu", "resnet50", False): (45.3, 32),
    ("cpu", "alexnet_bn", False): (129.7, 64),
    ("cpu", "nin_3block", False): (34.7, 32),
    ("cpu", "nin_4block", False): (33.6, 32),
    ("cpu", "nin_5block", False): (32.6, 32),
    ("cpu", "nin_3block_w50", False): (133.2, 32),
    ("cuda", "resnet18", False): (11830.0, 224),
    ("cuda", "resnet18", True): (49012.0, 32),
    ("cuda", "resnet50", False): (3983.0, 224),
    ("cuda", "vit_small_patch16_224", False): (5275.0, 224),
}
# an arch measured nowhere borrows this one's figure (and the estimate says so)
FALLBACK_ARCH = "resnet50"
# images a task pushes through the backbone per input image, relative to one plain view
TASK_COST = {"rotation": 4.0, "jigsaw": 1.0, "relative_patch": 2.0, "context_encoder": 1.5,
             "colorization": 1.0, "counting": 6.0, "simclr": 2.0, "vicreg": 2.0,
             "supervised": 1.0}
FORWARD_SPEEDUP = 3.0
# (train, test) images of common downstream datasets, used while their shards are not made yet
TYPICAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                 "stl10": (5_000, 8_000), "svhn": (73_257, 26_032),
                 "flowers102": (1_020, 6_149), "fashion_mnist": (60_000, 10_000),
                 "mnist": (60_000, 10_000), "imagenet": (1_281_167, 50_000)}
DEFAULT_SIZE = 224
# floating-point operations per second of a linear probe's fit (float32 matmuls)
FIT_FLOPS = {"cpu": 2e10, "cuda": 5e12}


@dataclass(frozen=True)
class Estimate:
    """Seconds of one cell (None when the data's size is unknown) and where the rate came from."""

    seconds: float | None
    img_per_s: float
    source: str


def estimate(study: Study, grid: Grid, out: str | None = None,
             device: str | None = None) -> dict[str, Estimate]:
    """Cell id -> :class:`Estimate` for every cell of ``grid``.

    ``device``: ``cpu`` or ``cuda`` (default: the study's ``[train] device``, else CUDA when
    available). ``out``: a study directory whose finished training runs give measured rates.
    """
    device = device or _device(study)
    measured = measured_rates(out) if out else {}
    small = bool(study.train.get("small_input", False))
    rates = {arch: _rate(arch, small, device, measured) for arch in study.archs}
    cost: dict[str, Estimate] = {}
    for cell in grid.train:
        rate, side, source = rates[cell.arch]
        size = _task_size(cell.task, cell.config.get("task_options", {}))
        ips = rate * (side / size) ** 2 / _task_cost(cell.task, cell.config["task_options"])
        images = _train_images(study, cell)
        cost[cell.id] = Estimate(None if images is None else images / ips, ips, source)
    from sslpipe.eval.transform import DEFAULT_SIZE as EVAL_SIZE

    for evaluation in grid.evals:
        rate, side, source = rates[evaluation.arch]
        size = int(evaluation.evaluation.options.get("size", EVAL_SIZE))
        ips = rate * (side / size) ** 2
        cost[evaluation.id] = Estimate(_eval_seconds(evaluation, ips, device), ips, source)
    return cost


def format_dry_run(study: Study, grid: Grid, costs: dict[str, Estimate]) -> list[str]:
    """The lines ``--dry-run`` prints: one per cell with its estimate, then the totals."""
    lines = [f"study {study.name}: {len(grid.train)} training runs, {len(grid.evals)} "
             f"evaluation cells ({len(grid)} cells)"]
    for cell in grid.cells():
        est = costs[cell.id]
        what = (f"{cell.task} on {cell.pretrain.data}" if isinstance(cell, TrainCell)
                else f"{cell.evaluation.kind} on {cell.downstream.name}")
        lines.append(f"  {cell.id:<60} {what:<40} {_duration(est.seconds):>9}  "
                     f"({est.img_per_s:,.0f} img/s, {est.source})")
    known = [e.seconds for e in costs.values() if e.seconds is not None]
    unknown = len(costs) - len(known)
    total = f"estimated total: {_duration(sum(known))}"
    if unknown:
        total += f" (+{unknown} cell(s) whose data size is unknown: missing manifest)"
    lines.append(total)
    return lines


def measured_rates(out: str) -> dict[str, float]:
    """Arch -> median rate, in pixels/s of one plain view (``img_per_s x TASK_COST x
    side**2``), of the finished training runs in study directory ``out``."""
    found: dict[str, list[float]] = {}
    root = os.path.join(out, "train")
    for folder, _, files in os.walk(root):
        if "cell.json" not in files:
            continue
        try:
            with open(os.path.join(folder, "cell.json"), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        ips = (record.get("result") or {}).get("img_per_s")
        parts = os.path.relpath(folder, root).split(os.sep)
        if record.get("status") == "ok" and ips and len(parts) == 3:
            arch, _, task = parts
            options = _run_task_options(folder)
            size = _task_size(task, options)
            # stored as pixels/s of one plain view, so any task and size can be derived
            found.setdefault(arch, []).append(float(ips) * _task_cost(task, options) * size**2)
    return {arch: sorted(v)[len(v) // 2] for arch, v in found.items()}


def _run_task_options(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "run", "config.json"), encoding="utf-8") as f:
            options = json.load(f).get("task_options", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return options if isinstance(options, dict) else {}


def _rate(arch: str, small: bool, device: str, measured: dict[str, float]
          ) -> tuple[float, int, str]:
    if arch in measured:
        return measured[arch], 1, "measured in this study"
    for key in ((device, arch, small), (device, arch, not small)):
        if key in DEFAULT_IMG_PER_S:
            rate, side = DEFAULT_IMG_PER_S[key]
            return rate, side, f"default {device}"
    rate, side = DEFAULT_IMG_PER_S[(device, FALLBACK_ARCH, False)]
    return rate, side, f"no figure for {arch}: {FALLBACK_ARCH}'s on {device}"


def _task_cost(task: str, options: dict[str, Any] | None = None) -> float:
    options = options or {}
    total = 0.0
    for name in task.split("+"):
        member: dict[str, Any] = (options.get(name) or {}) if "+" in task else options
        # rotation's default feeds all four rotations; mode="random" one
        one = name == "rotation" and member.get("mode") == "random"
        total += 1.0 if one else TASK_COST.get(name, 1.0)
    return total


def _task_size(task: str, options: dict[str, Any]) -> int:
    """Input side of a task: its ``size`` option, else the task's default, else 224."""
    if isinstance(options.get("size"), int):
        return int(options["size"])
    import dataclasses

    from sslpipe.registry import task_class

    sizes = []
    for name in task.split("+"):
        member: dict[str, Any] = options.get(name) or {} if "+" in task else {}
        if isinstance(member.get("size"), int):
            sizes.append(int(member["size"]))
            continue
        try:
            owner: Any = task_class(name)
            default = {f.name: f.default for f in dataclasses.fields(owner.Options)}.get("size")
        except ValueError:
            default = None
        sizes.append(default if isinstance(default, int) else DEFAULT_SIZE)
    return max(sizes)


def _train_images(study: Study, cell: TrainCell) -> float | None:
    n = _num_samples(cell.pretrain.data)
    if n is None:
        n = _size_from_name(cell.pretrain.name)
    if n is None:
        return None
    epochs = float(study.train.get("epochs", 100))
    images = epochs * n
    max_steps = int(study.train.get("max_steps", 0))
    if max_steps:
        images = min(images, max_steps * int(study.train.get("batch_size", 256)))
    return images


def _eval_seconds(cell: EvalCell, ips: float, device: str = "cpu") -> float | None:
    n_train, n_test = _num_samples(cell.downstream.train), _num_samples(cell.downstream.test)
    typical = TYPICAL_SIZES.get(cell.downstream.name.lower().replace("-", "_"))
    if (n_train is None or n_test is None) and typical:
        n_train, n_test = n_train or typical[0], n_test or typical[1]
    if n_train is None or n_test is None:
        return None
    seeds = cell.num_seeds
    labelled, subset = _labelled(cell, n_train)
    options = cell.evaluation.options
    forward = FORWARD_SPEEDUP * ips
    if cell.evaluation.kind == "finetune":
        steps = options.get("steps")
        batch = int(options.get("batch_size", 128))
        images = int(steps) * batch if steps else int(options.get("epochs", 10)) * labelled
        return seeds * (images / ips + n_test / forward)
    # features: each seed's subset (a full split once), the test set once per backbone
    backbones = seeds if cell.train is None else 1
    extract = (seeds if subset else backbones) * labelled + backbones * n_test
    seconds = extract / forward
    if cell.evaluation.kind == "linear":
        width = _probe_width(cell)
        epochs = int(options.get("epochs", 30))
        seconds += seeds * 6.0 * epochs * labelled * width * 10 / FIT_FLOPS.get(device, 2e10)
    return seconds


def _labelled(cell: EvalCell, n_train: int) -> tuple[int, bool]:
    """Training images of each seed under the cell's label budget, and whether it is a subset."""
    if cell.budget is None:
        return n_train, False
    from sslpipe.eval.labels import parse_budget

    budget = parse_budget(cell.budget)
    if budget.keeps_all:
        return n_train, False
    if budget.per_class:
        classes = _num_classes(cell.downstream.train)
        return min(n_train, budget.per_class * classes), True
    return max(1, round(n_train * (budget.fraction or 0))), True


def _num_classes(path: str) -> int:
    try:
        from sslpipe.data import read_manifest

        return len(read_manifest(resolve_data(path))["classes"]) or 10
    except ValueError:
        return 10


def _probe_width(cell: EvalCell) -> int:
    """Summed feature width of a linear probe's layers (from the model's feature_info)."""
    from sslpipe.eval.defaults import DEFAULT_POOL

    return _width(cell.arch, cell.small_input, str(cell.evaluation.options.get("layers", "last")),
                  int(cell.evaluation.options.get("pool", DEFAULT_POOL)))


@functools.lru_cache(maxsize=64)
def _width(arch: str, small_input: bool, layers: str, pool: int) -> int:
    try:
        from sslpipe.models import create_backbone

        model = create_backbone(arch, small_input=small_input)
        stages = [int(f["num_chs"]) for f in getattr(model, "feature_info", [])]
        pooled = int(getattr(model, "num_features", 512))
    except ValueError:
        stages, pooled = [], 512
    if layers == "all":
        return sum(min(pool, c * 64) for c in stages) + pooled
    if layers in ("last", "pooled"):
        return pooled
    return min(pool, 2048) * len(layers.split(","))


def _num_samples(path: str) -> int | None:
    try:
        from sslpipe.data import read_manifest

        return int(read_manifest(resolve_data(path))["num_samples"])
    except ValueError:
        return None


def _size_from_name(name: str) -> int | None:
    """A pretraining set named like a subset rule (``30k``, ``5000``) has that many images."""
    from sslpipe.data.subset import parse_subset

    if name.endswith("%"):
        return None
    try:
        return parse_subset(name, total=1 << 62)
    except ValueError:
        return None


def _device(study: Study) -> str:
    wanted = study.train.get("device", "auto")
    if wanted in ("cpu", "cuda"):
        return str(wanted)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
