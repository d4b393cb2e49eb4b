"""What every ``sslpipe eval`` protocol does around its own evaluation.

:func:`run_protocol` resolves the checkpoint (a run, a file, ``random``, ``supervised:RUN``,
``scratch``), the label budget and the probe seeds, runs the protocol's evaluation once per
seed (a pretrained backbone stays the same; untrained baselines draw their weights from the
seed), pools the runs into ``mean ± sample std`` per layer, writes the result record
(:mod:`sslpipe.eval.results`) and prints a line per layer. The commands and their options are
in :mod:`sslpipe.eval.cli`.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import click

Evaluate = Callable[[Any, dict[str, Any], "str | None", int, Any], dict[str, Any]]


def run_protocol(protocol: str, kw: dict[str, Any], config: dict[str, Any],
                 evaluate: Evaluate) -> None:
    """Run ``evaluate`` once per probe seed and write the result record.

    Args:
        protocol: ``linear``, ``knn`` or ``finetune`` (the record's ``protocol``).
        kw: the command's options (``sslpipe eval --help``), ``--train`` / ``--test``
            resolved.
        config: the protocol's own options, recorded in the record's ``config``.
        evaluate: ``(backbone, feature-cache key, cache dir, seed, TrainLabels) ->
            {layer: {"top1", "top5"}}`` for one seed.

    Raises:
        ValueError: ``--checkpoint scratch`` outside finetune, both label budgets given, or
            as the checkpoint, the data and ``evaluate`` raise.
    """
    from sslpipe.eval.baselines import RANDOM, SCRATCH, build_backbone, resolve_checkpoint
    from sslpipe.eval.data import describe_data
    from sslpipe.eval.fewlabels import TrainLabels
    from sslpipe.eval.intervals import summarize_runs
    from sslpipe.eval.labels import LabelBudget
    from sslpipe.eval.results import make_record, write_result

    info = resolve_checkpoint(kw["checkpoint"], kw["arch"], kw["small_input"])
    if info.method == SCRATCH and protocol != "finetune":
        raise ValueError("--checkpoint scratch is trained end to end on the labels: use it with "
                         "`sslpipe eval finetune` (its result sits beside the probes in "
                         "`sslpipe report`)")
    budget = None
    if kw["labels_per_class"] is not None and kw["label_fraction"] is not None:
        raise ValueError("--labels-per-class and --label-fraction: give one of the two")
    if kw["labels_per_class"] is not None or kw["label_fraction"] is not None:
        budget = LabelBudget(kw["labels_per_class"], kw["label_fraction"])
    seeds = list(range(kw["seed"], kw["seed"] + kw["num_seeds"]))
    out = kw["out"] or _default_out(kw["checkpoint"])
    data = {"train": describe_data(kw["train_dir"]), "test": describe_data(kw["test_dir"])}
    train = TrainLabels(kw["train_dir"], budget, seeds)
    cache = kw.get("cache") or os.path.join(out, ".features")
    click.echo(f"sslpipe eval {protocol}: {info.method} ({info.arch}) on {data['test']['name']}"
               + (f", {budget.name} labels" if budget else "")
               + (f", seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else ""))
    start = time.perf_counter()
    runs = []
    for seed in seeds:
        # untrained baselines draw their weights from the probe seed; a checkpoint is fixed
        init = seed if info.method in (RANDOM, SCRATCH) else kw["seed"]
        backbone = build_backbone(info, init)
        key = {"checkpoint": info.sha256 or f"random:{init}", "arch": info.arch,
               "small_input": info.small_input}
        runs.append(evaluate(backbone, key, cache, seed, train))
    results = summarize_runs(runs, seeds)
    seconds = time.perf_counter() - start
    config = {**config, "layers": kw.get("layers"), "pool": kw.get("pool"), "size": kw["size"],
              "batch_size": kw["batch_size"], "resize": "centre square, bilinear to size",
              "backend": kw["backend"]}
    record = make_record(protocol, kw["name"] or info.method, info.arch or "",
                         data["test"]["name"], results, info.to_json(), data, kw["seed"],
                         config, seconds, shlex.join(["sslpipe", *sys.argv[1:]]),
                         seeds=seeds, labels=train.describe() if budget else None)
    path = write_result(record, out)
    for layer, numbers in results.items():
        spread = f" ± {numbers['top1_std']:.2f} ({len(seeds)} seeds)" \
            if numbers.get("top1_std") is not None else ""
        click.echo(f"  {layer:<14} top-1 {numbers['top1']:6.2f}{spread}  "
                   f"top-5 {numbers['top5']:6.2f}")
    click.echo(f"{seconds:.0f} s -> {path}")


def _default_out(spec: str) -> str:
    from sslpipe.eval.baselines import SUPERVISED_PREFIX

    run_dir = spec[len(SUPERVISED_PREFIX):] if spec.startswith(SUPERVISED_PREFIX) else spec
    if os.path.isdir(run_dir):
        return os.path.join(run_dir, "eval")
    raise ValueError(f"--out is needed when --checkpoint is {spec!r} (not a run directory)")
