"""``--dry-run``: the grid, the number of runs and what they will cost.

Training cost of a run = images it reads (``epochs x num_samples`` of the pretraining
manifest, or ``max_steps x batch_size`` when that is smaller) x the task's ``TASK_COST`` /
the images/s of a training step. Evaluation: linear and kNN extract features once per cell
(train + test images at ``FORWARD_SPEEDUP`` x the training rate: a forward pass without
backward); fine-tuning trains the steps :func:`~sslpipe.eval.finetune.finetune_steps` gives
(``epochs`` over the train split within ``min_steps`` / ``max_steps``, or ``steps``) at the
training rate. With a label budget the train split counts the budget's images
(``round(P x n)`` or ``N x classes``), and with ``probe_seeds = K`` every seed extracts its own
subset's features and trains its own probe or fine-tune (the test features of a trained
checkpoint, and the features of a 100 % budget, are extracted once and cached; the random
baseline's change with each seed's init). A linear probe's fit costs ``6 x epochs x n_train x
D x classes`` floating-point operations at ``FIT_FLOPS``, ``D`` the probe's feature widths
summed over its layers (about ``pool`` per stage).

Images/s come from :mod:`sslpipe.study.rates`: the rates the study's finished training runs
recorded, else a default measured per arch and device, scaled to the task's input side.

While the data is not sharded yet, a pretraining set named like a subset rule (``30k``) counts
that many images and a downstream dataset with a common name (``cifar10``, ``svhn``, ...) its
usual split sizes (``TYPICAL_SIZES``); anything else is estimated as ``?``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from sslpipe.eval.finetune import FinetuneOptions, finetune_steps
from sslpipe.study.grid import EvalCell, Grid, TrainCell
from sslpipe.study.rates import (
    DEFAULT_IMG_PER_S,
    DEFAULT_SIZE,
    FALLBACK_ARCH,
    TASK_COST,
    measured_rates,
    step_rate,
    task_cost,
    task_size,
)
from sslpipe.study.spec import Study, resolve_data

# the rates (sslpipe.study.rates) are re-exported: they were this module's
__all__ = ["DEFAULT_IMG_PER_S", "DEFAULT_SIZE", "FALLBACK_ARCH", "TASK_COST", "Estimate",
           "estimate", "format_dry_run", "measured_rates"]

FORWARD_SPEEDUP = 3.0
# (train, test) images of common downstream datasets, used while their shards are not made yet
TYPICAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                 "stl10": (5_000, 8_000), "svhn": (73_257, 26_032),
                 "flowers102": (1_020, 6_149), "fashion_mnist": (60_000, 10_000),
                 "mnist": (60_000, 10_000), "imagenet": (1_281_167, 50_000)}
# floating-point operations per second of a linear probe's fit (float32 matmuls)
FIT_FLOPS = {"cpu": 2e10, "cuda": 5e12}


_FINETUNE_FIELDS = {f.name for f in dataclasses.fields(FinetuneOptions)}


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
    rates = {arch: step_rate(arch, small, device, measured) for arch in study.archs}
    cost: dict[str, Estimate] = {}
    for cell in grid.train:
        rate, side, source = rates[cell.arch]
        size = task_size(cell.task, cell.config.get("task_options", {}))
        ips = rate * (side / size) ** 2 / task_cost(cell.task, cell.config["task_options"])
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
        batch = int(options.get("batch_size", 128))
        steps = finetune_steps(FinetuneOptions(**{k: v for k, v in options.items() if k in
                                                  _FINETUNE_FIELDS}), math.ceil(labelled / batch))
        return seeds * (steps * batch / ips + n_test / forward)
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
