"""``sslpipe quickstart``: the main job, end to end, on the embedded FashionMNIST sample.

Pretrain a small timm backbone with the rotation task (real ``sslpipe train`` code, reading
the sample's WebDataset shards through ``create_loader``), then fit linear probes on frozen
features of every stage (real ``sslpipe eval`` code) for the pretrained backbone and for a
random-init backbone of the same architecture, print the table and write a bar chart. On 2 CPU
cores the defaults take about two minutes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from sslpipe.atomic import atomic_write_text
from sslpipe.cli import user_error


@dataclass(frozen=True)
class QuickstartConfig:
    """Settings of the quickstart (the CLI fills the same fields).

    Attributes:
        out: output directory (run directory, probe results, report).
        arch: timm architecture of the backbone.
        size: image side fed to the backbone (FashionMNIST's 28 px is resized to it).
        epochs, batch_size, lr: rotation pretraining schedule (SGD, warmup 1 epoch, cosine).
        max_steps: stop pretraining after this many steps (0: run all epochs).
        layers: probed layers: ``"all"``, ``"last"`` or names such as ``"stage2,pooled"``.
        probe_epochs: epochs of each linear classifier on the cached features.
        workers: loader worker processes (None: one per CPU, at most 8).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        seed: seeds pretraining, the random-init baseline and the probes.
        progress: progress bars on the long steps.
    """

    out: str = "runs/quickstart"
    arch: str = "resnet18"
    size: int = 32
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.1
    max_steps: int = 0
    layers: str = "all"
    probe_epochs: int = 30
    workers: int | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    # FashionMNIST's objects are centred 28 px squares: the whole image, flipped half the time
    # (RotNet's ImageNet random-resized crops of down to 8 % would cut most of a 28 px object)
    task_options: dict[str, Any] = field(
        default_factory=lambda: {"mode": "all", "crop": "center", "flip": 0.5})


@dataclass
class QuickstartResult:
    """Probe results per method (``{"rotation"|"random": {layer: {"top1", "top5", ...}}}``),
    the run directory and the report files written."""

    results: dict[str, dict[str, dict[str, float]]]
    run_dir: str
    report: dict[str, str]
    train_metrics: dict[str, float]


def run_quickstart(config: QuickstartConfig) -> QuickstartResult:
    """Pretrain rotation, probe pretrained and random-init backbones, write the report."""
    import torch

    from sslpipe.data import sample_path
    from sslpipe.eval import LinearOptions, linear_probe, write_report
    from sslpipe.models import create_backbone
    from sslpipe.train import TrainConfig, train

    train_dir, test_dir = sample_path("train"), sample_path("test")
    run_dir = os.path.join(config.out, "pretrain-rotation")
    train_config = TrainConfig(
        task="rotation", data=train_dir, arch=config.arch, epochs=config.epochs,
        batch_size=config.batch_size, lr=config.lr, weight_decay=5e-4,
        warmup_epochs=min(1.0, float(config.epochs)), schedule="cosine",
        max_steps=config.max_steps, num_workers=config.workers, out=run_dir, seed=config.seed,
        device=config.device, progress=config.progress, tensorboard=False, probe=False,
        task_options={"size": config.size, **config.task_options},
    )
    _say(config, f"[1/3] rotation pretraining of {config.arch} on the embedded FashionMNIST "
                  f"sample ({train_dir})")
    trained = train(train_config)

    pretrained = create_backbone(config.arch, checkpoint=trained.backbone)
    torch.manual_seed(config.seed)
    random_init = create_backbone(config.arch)
    device = None if config.device == "auto" else config.device
    options = LinearOptions(epochs=config.probe_epochs, seed=config.seed)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for step, (method, backbone) in enumerate(
        (("rotation", pretrained), ("random init", random_init)), start=2
    ):
        _say(config, f"[{step}/3] linear probes on frozen {method} features ({config.layers})")
        results[method] = linear_probe(
            backbone, train_dir, test_dir, layers=config.layers, options=options,
            size=config.size, workers=config.workers, device=device, progress=config.progress,
        )
    report = write_report(results, config.out, protocol="linear", dataset="fashion-mnist sample")
    _write_json(os.path.join(config.out, "quickstart.json"),
                {"config": asdict(config), "train": trained.metrics, "results": results})
    return QuickstartResult(results, trained.run_dir, report, trained.metrics)


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Plain-text table: one row per layer, top-1 / top-5 per method, and the difference."""
    methods = list(results)
    layers = list(next(iter(results.values())))
    head = f"{'layer':<8}" + "".join(f"{m + ' top-1/top-5':>26}" for m in methods)
    if len(methods) == 2:
        head += f"{'top-1 gain':>12}"
    lines = [head, "-" * len(head)]
    for layer in layers:
        row = f"{layer:<8}"
        for m in methods:
            r = results[m][layer]
            row += f"{r['top1']:>18.1f} / {r['top5']:>5.1f}"
        if len(methods) == 2:
            gain = results[methods[0]][layer]["top1"] - results[methods[1]][layer]["top1"]
            row += f"{gain:>+12.1f}"
        lines.append(row)
    return "\n".join(lines)


def _say(config: QuickstartConfig, message: str) -> None:
    if config.progress:
        click.echo(message, err=True)


def _write_json(path: str, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


@click.command()
@click.option("--out", default=QuickstartConfig.out, show_default=True, type=click.Path(),
              help="Output directory.")
@click.option("--arch", default=QuickstartConfig.arch, show_default=True,
              help="timm architecture.")
@click.option("--size", default=QuickstartConfig.size, show_default=True, type=int,
              help="Image side fed to the backbone.")
@click.option("--epochs", default=QuickstartConfig.epochs, show_default=True, type=int,
              help="Rotation pretraining epochs.")
@click.option("--batch-size", default=QuickstartConfig.batch_size, show_default=True, type=int)
@click.option("--max-steps", default=QuickstartConfig.max_steps, show_default=True, type=int,
              help="Stop pretraining after this many steps (0: all epochs).")
@click.option("--layers", default=QuickstartConfig.layers, show_default=True,
              help="Probed layers: all, last, or names (stage2,pooled).")
@click.option("--probe-epochs", default=QuickstartConfig.probe_epochs, show_default=True,
              type=int)
@click.option("--workers", default=None, type=int,
              help="Loader workers. [one per CPU, at most 8]")
@click.option("--device", default=QuickstartConfig.device, show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", default=QuickstartConfig.seed, show_default=True, type=int)
@click.option("--progress/--no-progress", default=True, show_default=True)
def quickstart(**options: Any) -> None:
    """Rotation pretraining + linear probes vs random init on the embedded sample.

    Prints top-1/top-5 per layer for both backbones and writes OUT/report.md, CSV tables and
    a bar chart (OUT/*.png).
    """
    try:
        config = QuickstartConfig(**options)
        result = run_quickstart(config)
    except ValueError as err:
        raise user_error(err) from err
    click.echo("\nLinear probes on the FashionMNIST sample (4,000 train / 1,000 test images), "
               f"{config.arch} at {config.size} px:\n")
    click.echo(format_table(result.results))
    click.echo(f"\nrotation pretraining: {result.train_metrics.get('pretext_acc', 0):.1%} "
               f"rotation accuracy; run directory {result.run_dir}")
    charts = sorted(os.path.basename(p) for k, p in result.report.items() if k.startswith("png:"))
    tables = sorted(os.path.basename(p) for k, p in result.report.items() if k.endswith("_csv"))
    click.echo(f"report: {result.report['markdown']} (these tables and the charts)")
    click.echo(f"  charts: {', '.join(charts)}; numbers: {', '.join(tables)}, quickstart.json; "
               f"all in {config.out}")
