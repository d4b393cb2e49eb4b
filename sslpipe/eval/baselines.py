"""What ``--checkpoint`` names: a pretraining run, a weights file, or a baseline.

* ``random``: the architecture with random initialisation (seeded), the floor of every table:
  frozen random features and a probe.
* ``scratch``: the same random initialisation, trained supervised end to end (the fine-tune
  path, ``sslpipe eval finetune``) on exactly the evaluation's labels: what the labels alone
  give, beside what pretraining adds.
* ``supervised:RUN_DIR``: a run of the registered ``supervised`` task, the ceiling.
* ``RUN_DIR``: a run directory written by ``sslpipe train`` (its exported backbone).
* ``FILE.safetensors`` (or ``.pt``): backbone weights that load into ``timm.create_model(arch,
  num_classes=0)``.

Each resolves to a backbone and a description for the result file (method name, checkpoint
path and sha256, the pretraining task and data when the run directory says).
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslpipe.data.writer import sha256_of

RANDOM = "random"
SCRATCH = "scratch"
SUPERVISED_PREFIX = "supervised:"
_WEIGHT_EXTS = (".safetensors", ".pt", ".pth")
# where a run directory keeps its exported backbone, most specific first
_RUN_WEIGHTS = ("backbone.safetensors", "export/backbone.safetensors", "final/backbone.safetensors")
_RUN_CONFIGS = ("config.json", "run.json", "config.yaml", "config.yml")


@dataclass
class CheckpointInfo:
    """A resolved ``--checkpoint``.

    Attributes:
        spec: what the user gave.
        method: the row name in tables (``random``, ``supervised``, the run's task, or the
            file's stem).
        path: the weights file (None for ``random``).
        sha256: the weights file's hash (None for ``random``).
        arch: the architecture (from the run's config when it has one).
        small_input: whether the backbone uses sslpipe's 32 px stem.
        pretrain: what the run directory says about pretraining (task, data, subset size).
    """

    spec: str
    method: str
    path: str | None = None
    sha256: str | None = None
    arch: str | None = None
    small_input: bool = False
    pretrain: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "method": self.method, "path": self.path,
                "sha256": self.sha256, "arch": self.arch, "small_input": self.small_input,
                "pretrain": self.pretrain}


def resolve_checkpoint(spec: str, arch: str | None = None,
                       small_input: bool | None = None) -> CheckpointInfo:
    """Parse ``--checkpoint`` (see the module docstring) without building anything.

    ``arch`` / ``small_input`` given by the user win over the run's config; one of the two
    must name the architecture.
    """
    if spec in (RANDOM, SCRATCH):
        info = CheckpointInfo(spec, spec)
    elif spec.startswith(SUPERVISED_PREFIX):
        info = _from_run(spec, spec[len(SUPERVISED_PREFIX):])
        task = info.pretrain.get("task")
        if task not in (None, "supervised"):
            raise ValueError(f"--checkpoint {spec!r}: the run's task is {task!r}, not "
                             "'supervised' (train one with `sslpipe train supervised`)")
        info.method = "supervised"
    elif os.path.isdir(spec):
        info = _from_run(spec, spec)
    elif os.path.isfile(spec):
        if not spec.endswith(_WEIGHT_EXTS):
            raise ValueError(f"--checkpoint {spec!r}: expected a weights file ending in "
                             f"{', '.join(_WEIGHT_EXTS)}, a run directory, 'random' or "
                             "'supervised:RUN_DIR'")
        meta = _file_metadata(spec)
        method = meta.get("task") or os.path.splitext(os.path.basename(spec))[0]
        info = CheckpointInfo(spec, method, os.path.abspath(spec), sha256_of(spec),
                              meta.get("arch"), meta.get("small_input") == "True")
    else:
        raise ValueError(f"--checkpoint must be a run directory, a .safetensors file, 'random', "
                         f"'scratch' or 'supervised:RUN_DIR'. Got {spec!r}, which does not "
                         "exist")
    info.arch = arch or info.arch
    if info.arch is None:
        raise ValueError(f"--arch is needed: {spec!r} does not say which architecture it is")
    if small_input is not None:
        info.small_input = small_input
    return info


def build_backbone(info: CheckpointInfo, seed: int = 0) -> nn.Module:
    """The timm backbone (``num_classes=0``) of a resolved checkpoint, in eval mode.

    ``random`` and ``scratch`` draw their weights from ``seed``, so the baselines are
    reproducible.
    """
    from sslpipe.models import create_backbone

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = create_backbone(info.arch or "", small_input=info.small_input,
                                checkpoint=info.path)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def _from_run(spec: str, run_dir: str) -> CheckpointInfo:
    if not os.path.isdir(run_dir):
        raise ValueError(f"--checkpoint {spec!r}: run directory {run_dir!r} does not exist")
    config = _run_config(run_dir)
    weights = _run_weights(spec, run_dir, config)
    task = config.get("task")
    keys = ("task", "data", "epochs", "max_steps", "seed")
    pretrain: dict[str, Any] = {key: config[key] for key in keys if key in config}
    steps = _steps_done(run_dir)
    if steps is not None:  # what the run did (epochs and max_steps are what it was asked)
        pretrain["steps"] = steps
    num_images = _pretrain_images(config)
    if num_images is not None:
        pretrain["num_images"] = num_images
    return CheckpointInfo(spec, str(task or os.path.basename(os.path.normpath(run_dir))),
                          os.path.abspath(weights), sha256_of(weights),
                          config.get("arch"), bool(config.get("small_input", False)), pretrain)


def _run_config(run_dir: str) -> dict[str, Any]:
    for name in _RUN_CONFIGS:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                if name.endswith(".json"):
                    data = json.load(f)
                else:
                    import yaml

                    data = yaml.safe_load(f)
            if isinstance(data, dict):
                return data.get("config", data) if isinstance(data.get("config"), dict) else data
    return {}


def _run_weights(spec: str, run_dir: str, config: dict[str, Any]) -> str:
    named = config.get("backbone") or config.get("export")
    candidates = ([str(named)] if isinstance(named, str) else []) + list(_RUN_WEIGHTS)
    for name in candidates:
        path = name if os.path.isabs(name) else os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    found = sorted(glob.glob(os.path.join(run_dir, "**", "*.safetensors"), recursive=True))
    if len(found) == 1:
        return found[0]
    raise ValueError(f"--checkpoint {spec!r}: expected one exported backbone "
                     f"(backbone.safetensors) in {run_dir!r}. Found "
                     f"{[os.path.relpath(p, run_dir) for p in found] or 'none'}; "
                     "export one with `sslpipe export` or pass the file itself")


def _file_metadata(path: str) -> dict[str, str]:
    # `sslpipe train` / `sslpipe export` record arch, task and small_input in the file
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    return {k: v for k, v in meta.items() if v not in ("", "None")}


def _steps_done(run_dir: str) -> int | None:
    """The optimizer steps of a finished run (its final.json), else None."""
    import json

    try:
        with open(os.path.join(run_dir, "final.json"), encoding="utf-8") as f:
            return int(json.load(f)["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pretrain_images(config: dict[str, Any]) -> int | None:
    data = config.get("data")
    if isinstance(data, str) and os.path.isdir(data):
        try:
            from sslpipe.data.manifest import read_manifest

            return int(read_manifest(data)["num_samples"])
        except ValueError:
            return None
    return None
