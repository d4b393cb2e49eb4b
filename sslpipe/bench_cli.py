"""``sslpipe bench``: the command line of :mod:`sslpipe.bench` (imported when it runs, so that
``sslpipe --help`` stays light)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import click

from sslpipe.cli import user_error


@click.command()
@click.argument("task")
@click.option("--data", required=True, help="Shard directory (or manifest URL, brace pattern).")
@click.option("--arch", default="resnet50", show_default=True, help="timm architecture.")
@click.option("--small-input", is_flag=True, help="3x3 stride-1 stem, for 32 px data.")
@click.option("--batch-size", default=256, show_default=True, help="Images per batch.")
@click.option("--steps", default=10, show_default=True, help="Timed batches per path.")
@click.option("--device", default=None, help="Default: cuda when available, else cpu.")
@click.option("--backends", default="all", show_default=True,
              help="Comma-separated: cpu, nvjpeg, dali, or all.")
@click.option("--num-workers", type=int, default=None,
              help="Loader workers. [one per CPU, at most 8]")
@click.option("--hw-decoder-load", type=float, default=0.65, show_default=True,
              help="dali on CUDA: share of JPEGs on the hardware decoder.")
@click.option("--cpu-decode-share", type=float, default=0.0, show_default=True,
              help="nvjpeg: share of JPEGs the CPU workers decode beside nvJPEG.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
              show_default=True, help="Autocast of the model step (auto: bf16 on CUDA).")
@click.option("--no-model", is_flag=True, help="Measure the input paths only.")
@click.option("--fed", is_flag=True,
              help="Also time the training step fed by each backend (its share of the "
                   "synthetic step's speed).")
@click.option("--task-option", "-o", "task_options", multiple=True, metavar="KEY=VALUE",
              help="A task option (repeatable), e.g. -o size=32; values are YAML.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also write the rates to this JSON file.")
def bench(task: str, data: str, arch: str, small_input: bool, batch_size: int, steps: int,
          device: str | None, backends: str, num_workers: int | None, hw_decoder_load: float,
          cpu_decode_share: float, precision: str, no_model: bool, fed: bool,
          task_options: tuple[str, ...], out: str | None) -> None:
    """Images/s of each decode backend on your shards, beside the model's training step.

    \b
    sslpipe bench simclr --data shards/in60k --arch resnet50 --device cuda
    sslpipe bench rotation --data shards/fm --arch resnet18 --small-input -o size=32
    """
    from sslpipe.atomic import atomic_write_text
    from sslpipe.bench import BACKENDS, bench_loader, model_rates, table
    from sslpipe.devices import default_device
    from sslpipe.registry import create_task
    from sslpipe.train.config import parse_task_options

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        names = list(BACKENDS) if backends == "all" else [b.strip() for b in backends.split(",")]
        unknown = [b for b in names if b not in BACKENDS]
        if unknown:
            raise ValueError(f"--backends: unknown {unknown}; expected some of "
                             f"{', '.join(BACKENDS)} or 'all'")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"--steps and --batch-size must be >= 1. Got {steps}, {batch_size}")
        dev = default_device(device)
        the_task = create_task(task, **parse_task_options(task_options))
        options: dict[str, Any] = {"hw_decoder_load": hw_decoder_load,
                                   "cpu_decode_share": cpu_decode_share}
        say(f"sslpipe bench {task}: each backend on {data} ({dev})")
        rates = bench_loader(data, the_task, batch_size, steps, dev, names, num_workers,
                             progress=say, **options)
        step = None
        if not no_model:
            ran = [r.path for r in rates if not math.isnan(r.images_per_s)] if fed else []
            measured = model_rates(the_task, arch, small_input, data, batch_size, steps, dev,
                                   precision, ran, num_workers, options, progress=say)
            step = measured[0].images_per_s
            rates += measured
    except ValueError as err:
        raise user_error(err) from err
    click.echo(f"sslpipe bench {task} on {data} (batch {batch_size}, {dev}, {steps} steps)\n")
    click.echo(table(rates, step))
    if out:
        record = {"task": task, "data": data, "arch": arch, "batch_size": batch_size,
                  "device": str(dev), "steps": steps, "rates": [
                      {**asdict(r), "images_per_s": None if math.isnan(r.images_per_s)
                       else r.images_per_s} for r in rates]}
        atomic_write_text(out, json.dumps(record, indent=1) + "\n")
        click.echo(f"\n-> {out}")
