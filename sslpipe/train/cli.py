"""``sslpipe train`` and ``sslpipe export``.

Every option defaults to None here: only what the user typed overrides the config file
(``--config``), which overrides :class:`~sslpipe.train.config.TrainConfig`'s defaults. What
the user gave (typed or in the file) is also what decides the rest:

* a new run fits what was not given to the data (image size, small stem: ``fit.py``) and, when
  ``--batch-size`` was not given, the batch to the memory (``footprint.py``);
* ``--resume`` takes what was not given from the run's own config, so the command that
  started a run (or less) continues it; what was given must match the run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sslpipe.cli import user_error

_FIELDS = ("data", "val", "arch", "small_input", "freeze_until", "epochs", "batch_size",
           "max_steps", "drop_last", "optimizer", "lr", "momentum", "weight_decay", "scale_lr",
           "warmup_epochs", "schedule", "min_lr", "precision", "channels_last", "compile",
           "backend", "num_workers", "hw_decoder_load", "cpu_decode_share", "gpus", "procs",
           "sync_bn", "out", "resume", "overwrite", "seed",
           "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "log_every", "probe",
           "num_classes", "progress", "device", "memory_check")


@click.command(context_settings={"show_default": True})
@click.argument("task", required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML or TOML file of TrainConfig fields.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--data", help="Shard directory (with manifest.json), or the URL of a shard "
              "directory's manifest.json (http(s), s3:// ... through fsspec).")
@click.option("--val", help="Validation shard directory (val loss, online probe accuracy).")
@click.option("--arch", help="timm architecture, e.g. resnet50, alexnet_bn. [resnet50]")
@click.option("--small-input/--no-small-input", default=None,
              help="3x3 stride-1 stem without max-pool, for 32 px data.")
@click.option("--freeze-until", help="Freeze the backbone up to this stage (conv3, layer2).")
@click.option("--epochs", type=int, help="[100]")
@click.option("--batch-size", type=int, help="Global batch size over all processes. [256]")
@click.option("--max-steps", type=int, help="Stop after this many steps (0: no limit).")
@click.option("--drop-last/--no-drop-last", default=None,
              help="Leave out each epoch's last partial batch. [drop-last]")
@click.option("--optimizer", type=click.Choice(["sgd", "lars", "adamw"]), help="[sgd]")
@click.option("--lr", type=float, help="Peak learning rate. [0.1]")
@click.option("--momentum", type=float, help="[0.9]")
@click.option("--weight-decay", type=float, help="[1e-4]")
@click.option("--scale-lr/--no-scale-lr", default=None, help="lr x batch_size / 256.")
@click.option("--warmup-epochs", type=float, help="[0]")
@click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), help="[cosine]")
@click.option("--min-lr", type=float, help="Final lr of the cosine schedule. [0]")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="[auto]")
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the model.")
@click.option("--backend", type=click.Choice(["auto", "dali", "nvjpeg", "cpu"]), help="[auto]")
@click.option("--num-workers", type=int,
              help="Loader workers per process. [one per CPU, at most 8]")
@click.option("--hw-decoder-load", type=float,
              help="dali on CUDA: share of JPEGs on the hardware decoder. [0.65]")
@click.option("--cpu-decode-share", type=float,
              help="nvjpeg: share of JPEGs the CPU workers decode beside nvJPEG. [0]")
@click.option("--gpus", type=int, help="GPUs (processes, NCCL) on this node.")
@click.option("--procs", type=int, help="CPU processes (gloo DDP).")
@click.option("--sync-bn/--no-sync-bn", default=None,
              help="SyncBatchNorm under DDP (default: on for simclr and vicreg, whose losses "
                   "compare the samples of the batch).")
@click.option("--out", help="Run directory. [runs/train]")
@click.option("--resume", is_flag=True, default=None,
              help="Continue the run in --out from its newest checkpoint; options not given "
              "are the run's.")
@click.option("--overwrite", is_flag=True, default=None,
              help="Delete the run in --out (checkpoints, metrics, exports, eval) and start anew.")
@click.option("--seed", type=int, help="[0]")
@click.option("--checkpoint-every", type=int, help="Also checkpoint every N steps.")
@click.option("--checkpoint-minutes", type=float,
              help="Also checkpoint when this many minutes passed since the last one (0: off). "
              "[5]")
@click.option("--keep-checkpoints", type=int, help="[3]")
@click.option("--log-every", type=int, help="[10]")
@click.option("--probe/--no-probe", default=None, help="Online linear probe on the labels.")
@click.option("--num-classes", type=int, help="Probe classes (default: from the manifest).")
@click.option("--progress/--no-progress", default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--memory-check/--no-memory-check", default=None,
              help="Estimate a step's memory first: refuse a --batch-size that does not fit; "
              "without --batch-size, train with the largest power of two that fits. [on]")
@click.option("--task-option", "-o", "task_option", multiple=True, metavar="KEY=VALUE",
              help="Task option, repeatable: -o size=32 -o jigsaw.grid=3.")
def train(task: str | None, config_file: str | None, print_config: bool, task_option: tuple[str],
          **options: Any) -> None:
    """Pretrain a backbone on TASK (e.g. rotation, jigsaw, rotation+jigsaw).

    \b
    sslpipe train rotation --data shards/fmnist --arch resnet18 --small-input \\
        --epochs 10 --batch-size 256 -o size=32 --out runs/rot
    sslpipe train jigsaw --data shards/in60k --arch resnet50 --gpus 4
    sslpipe train rotation --out runs/rot --resume

    Ctrl-C (or SIGTERM) stops after the current step with a checkpoint (exit status 130, 143);
    a second one stops at once, keeping the newest checkpoint.
    """
    from sslpipe.atomic import WriteError
    from sslpipe.train.config import TrainConfig, merge, parse_task_options, read_config_file
    from sslpipe.train.trainer import TrainingDiverged, TrainingInterrupted
    from sslpipe.train.trainer import train as run

    out: str | None = options.get("out")  # where an interrupted command left its run
    try:
        in_file = read_config_file(config_file) if config_file else {}
        config = merge(TrainConfig(), in_file)
        values = {k: v for k, v in options.items() if k in _FIELDS and v is not None}
        if task:
            values["task"] = task
        if task_option:
            values["task_options"] = parse_task_options(task_option)
        config = merge(config, values)
        given = set(in_file) | set(values)
        out = config.out
        resumed = _resume(config, given) if config.resume else None
        if config.resume and resumed is None:
            click.echo(f"--resume: {config.out} holds no run yet (no config.json): starting "
                       "a new one", err=True)
        if resumed is not None:
            config = resumed
        elif config.data is not None:
            config = _fit(config, "small_input" in given)
        if print_config:
            click.echo(json.dumps(config.to_dict(), indent=2, sort_keys=True))
            return
        result = run(config, fit_batch=resumed is None and "batch_size" not in given)
    except TrainingInterrupted as stop:
        click.echo(f"interrupted: {stop}", err=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        click.echo(f"interrupted: {_what_is_kept(out)}", err=True)
        sys.exit(130)
    except (ValueError, TrainingDiverged, WriteError) as err:
        raise user_error(err) from err
    click.echo(f"run directory: {result.run_dir}")
    click.echo(f"backbone: {result.backbone}")
    click.echo("final: " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))


def _what_is_kept(out: str | None) -> str:
    """What an interrupted command leaves to resume from, for its last message."""
    from sslpipe.train.checkpoint import latest_checkpoint

    newest = latest_checkpoint(out) if out else None
    if newest is None:
        return ("no checkpoint was written yet: the same command starts the run from the "
                "beginning")
    return f"the newest checkpoint, {newest}, is kept; the same command with --resume " \
        "continues from it"


def _fit(config: Any, small_input_chosen: bool) -> Any:
    """The image size and stem fitted to small images the user gave no size for."""
    from sslpipe.train.fit import data_image_side, fit_to_data

    options, small, note = fit_to_data(config.task, config.arch, data_image_side(config.data),
                                       config.task_options, small_input_chosen)
    if note is None:
        return config
    click.echo(note, err=True)
    return config.replace(task_options=options,
                          small_input=config.small_input if small is None else small)


def _resume(config: Any, given: set[str]) -> Any:
    """``config`` with what the user did not give taken from the run in ``config.out`` (None
    when there is no run to take it from: it resumes from the start, fitted as a new run).

    Every setting is taken, those that may change on a resume (``RESUME_FREE_FIELDS``:
    workers, logging, ``max_steps``, ...) too, so that ``sslpipe train --out RUN --resume``
    continues the run as it was started (a run with ``--max-steps 6`` stops at 6 again);
    only ``resume``, ``overwrite`` and ``out`` are this command's own. Task options are merged
    option by option (a multi-task's member options too).
    """
    import dataclasses

    from sslpipe.train.checkpoint import saved_config
    from sslpipe.train.config import TrainConfig

    saved = saved_config(config.out)
    if saved is None:
        return None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    this_command = {"resume", "overwrite", "out", "task_options"}
    taken = {k: v for k, v in saved.items()
             if k in fields and k not in given and k not in this_command}
    options = dict(saved.get("task_options") or {})
    for key, value in config.task_options.items():
        own = options.get(key)
        options[key] = ({**own, **value} if isinstance(own, dict) and isinstance(value, dict)
                        else value)
    return config.replace(**taken, task_options=options)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output file, e.g. backbone.safetensors.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="A specific checkpoint (default: the run's newest).")
@click.option("--network", type=click.Choice(["online", "teacher"]), default=None,
              help="Which copy of the backbone, for tasks with a momentum teacher (BYOL, "
                   "MoCo v3, DINO). Default: the task's evaluation network (DINO: teacher; "
                   "others: online), the one in the run's backbone.safetensors.")
def export(run_dir: str, out: str, checkpoint: str | None, network: str | None) -> None:
    """Write the backbone of RUN_DIR as timm weights (safetensors).

    \b
    sslpipe export runs/rot --out backbone.safetensors
    sslpipe export runs/byol --out teacher.safetensors --network teacher
    timm.create_model(ARCH, pretrained=True, num_classes=0,
                      pretrained_cfg_overlay=dict(file="backbone.safetensors"))
    """
    from sslpipe.train.export import export_run

    try:
        path = export_run(run_dir, out, checkpoint, network)
    except ValueError as err:
        raise user_error(err) from err
    click.echo(path)
