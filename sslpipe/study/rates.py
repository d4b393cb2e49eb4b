"""Images/s of a study's training steps: the defaults measured per arch, the rates a study's
finished runs recorded, and what a task costs per input image.

A rate comes, first, from the ``img_per_s`` that finished training runs of the same arch in
the study's output directory recorded (:func:`measured_rates`); else from
``DEFAULT_IMG_PER_S``, measured per arch:

* ``cpu``: on this project's 2-core CPU, one thread, batch 64, a ResNet training step (forward,
  backward, SGD) at 32 px; shared machine, so figures vary by tens of percent;
* ``cuda``: one H100, bf16, channels-last (measured outside this repository; the repository's
  own GPU measurements are in ``docs/performance.md``).

A rate measured at side ``s0`` is scaled by ``(s0 / s)**2`` to the task's input side ``s``
(:func:`task_size`), and divided by the images a task pushes through the backbone per input
image (:func:`task_cost`, ``TASK_COST``).
"""

from __future__ import annotations

import json
import os
from typing import Any

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
             "supervised": 1.0,
             # two views through the online network (forward + backward) and the teacher
             # (forward only, about a third of a step); DINO adds 6 local crops at (96/224)^2;
             # MAE's encoder sees a quarter of the patches, plus a light decoder
             "byol": 2.7, "mocov3": 2.7, "dino": 3.8, "mae": 0.5}
DEFAULT_SIZE = 224


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
            size = task_size(task, options)
            # stored as pixels/s of one plain view, so any task and size can be derived
            found.setdefault(arch, []).append(float(ips) * task_cost(task, options) * size**2)
    return {arch: sorted(v)[len(v) // 2] for arch, v in found.items()}


def step_rate(arch: str, small: bool, device: str, measured: dict[str, float]
              ) -> tuple[float, int, str]:
    """``(rate, side it was measured at, where it came from)`` of ``arch``'s training step:
    the study's measured rate (in pixels/s, side 1), else the default of ``device``, else
    ``FALLBACK_ARCH``'s."""
    if arch in measured:
        return measured[arch], 1, "measured in this study"
    for key in ((device, arch, small), (device, arch, not small)):
        if key in DEFAULT_IMG_PER_S:
            rate, side = DEFAULT_IMG_PER_S[key]
            return rate, side, f"default {device}"
    rate, side = DEFAULT_IMG_PER_S[(device, FALLBACK_ARCH, False)]
    return rate, side, f"no figure for {arch}: {FALLBACK_ARCH}'s on {device}"


def task_cost(task: str, options: dict[str, Any] | None = None) -> float:
    """Images ``task`` pushes through the backbone per input image (``TASK_COST``; a
    multi-task name sums its members'; rotation's ``mode="random"`` feeds one)."""
    options = options or {}
    total = 0.0
    for name in task.split("+"):
        member: dict[str, Any] = (options.get(name) or {}) if "+" in task else options
        # rotation's default feeds all four rotations; mode="random" one
        one = name == "rotation" and member.get("mode") == "random"
        total += 1.0 if one else TASK_COST.get(name, 1.0)
    return total


def task_size(task: str, options: dict[str, Any]) -> int:
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


def _run_task_options(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "run", "config.json"), encoding="utf-8") as f:
            options = json.load(f).get("task_options", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return options if isinstance(options, dict) else {}
