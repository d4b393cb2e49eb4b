"""``sslpipe eval {linear,knn,finetune}`` and ``sslpipe report``: the commands and their options.

What every protocol does around its own evaluation (checkpoint, label budget, seeds, the result
record) is :func:`sslpipe.eval.protocol.run_protocol`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from sslpipe.cli import user_error
from sslpipe.eval.defaults import DEFAULT_K, DEFAULT_POOL, DEFAULT_SIZE, DEFAULT_TEMPERATURE
from sslpipe.eval.protocol import run_protocol


@click.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Evaluate a backbone: linear probes per layer, kNN, fine-tuning.

    \b
    --checkpoint takes a run directory of `sslpipe train`, a .safetensors backbone file,
    'random' (random-init baseline), 'supervised:RUN_DIR' (supervised baseline) or, for
    finetune, 'scratch' (the architecture from random init trained end to end on the labels).
    Results go to OUT/eval_{protocol}_{dataset}_{method}[_{budget}].json (OUT defaults to
    RUN_DIR/eval).

    \b
    Few labels: --labels-per-class N or --label-fraction P keep a class-balanced, seeded
    subset of the training split (nested: for one seed a smaller budget's images are inside a
    larger one's). --seeds K repeats the evaluation with seeds SEED .. SEED+K-1 (the probe
    seed: the subset drawn, the probe's or fine-tune's initialisation and augmentation, and
    the random-init and scratch backbones' weights; a pretrained backbone stays the same) and
    reports mean ± sample std over the K runs.

    \b
    sslpipe eval linear --checkpoint runs/rotation --train shards/fm-train --test shards/fm-test
    sslpipe eval linear --checkpoint random --arch resnet18 --train ... --test ... --out evals
    sslpipe eval knn --checkpoint runs/simclr --train ... --test ...
    sslpipe eval finetune --checkpoint runs/jigsaw --freeze stage2 --train ... --test ...
    sslpipe eval linear --checkpoint runs/rotation --label-fraction 0.01 --seeds 3 ...
    sslpipe eval finetune --checkpoint scratch --arch nin_3block --labels-per-class 10 ...
    """


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--checkpoint", required=True,
                     help="RUN_DIR, FILE.safetensors, 'random', 'supervised:RUN_DIR' or "
                          "(finetune) 'scratch'."),
        click.option("--arch", default=None, help="timm architecture (default: the run's)."),
        click.option("--small-input/--standard-input", "small_input", default=None,
                     help="sslpipe's 3x3 stride-1 stem for 32 px data (default: the run's)."),
        click.option("--train", "train_dir", default=None,
                     help="Shard directory of the labelled training split (or the URL of "
                          "its manifest.json)."),
        click.option("--test", "test_dir", default=None,
                     help="Shard directory of the test split (or the URL of its "
                          "manifest.json)."),
        click.option("--data", "data_dir", default=None, type=click.Path(exists=True),
                     help="A directory holding train/ and test/ shard directories (instead "
                          "of --train and --test)."),
        click.option("--size", default=DEFAULT_SIZE, show_default=True,
                     help="Image side: centre square of the shorter side resized to it."),
        click.option("--batch-size", default=256, show_default=True),
        click.option("--workers", type=int, default=None,
                     help="DataLoader workers. [one per CPU, at most 8]"),
        click.option("--backend", type=click.Choice(["auto", "dali", "nvjpeg", "cpu"]),
                     default="auto", show_default=True,
                     help="Decode backend, as for `sslpipe train` (auto: dali or nvjpeg on "
                          "CUDA, cpu otherwise)."),
        click.option("--seed", default=0, show_default=True,
                     help="The probe seed (with --seeds K: the first of K): the labelled "
                          "subset drawn, the probe's initialisation and shuffling, and the "
                          "weights of 'random' and 'scratch'."),
        click.option("--seeds", "num_seeds", default=1, show_default=True,
                     type=click.IntRange(min=1),
                     help="Repeat with K probe seeds (SEED .. SEED+K-1); tables give mean ± "
                          "sample std (K)."),
        click.option("--labels-per-class", type=click.IntRange(min=1), default=None,
                     help="Few labels: exactly N training images per class (a class with "
                          "fewer is an error that names it)."),
        click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True),
                     default=None,
                     help="Few labels: this share of every class's training images, rounded "
                          "per class, at least 1 (0.01 = 1 %)."),
        click.option("--device", default=None, help="Default: cuda when available, else cpu."),
        click.option("--name", default=None, help="Method name in tables (default: the task)."),
        click.option("--out", default=None, type=click.Path(),
                     help="Output directory (default: RUN_DIR/eval)."),
    ]
    for option in reversed(options):
        fn = option(fn)

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        try:
            _resolve_splits(kwargs)
            fn(**kwargs)
        except ValueError as err:
            raise user_error(err) from err

    return wrapper


def _resolve_splits(kwargs: dict[str, Any]) -> None:
    """Fill --train / --test from --data DIR (DIR/train, DIR/test) where they are not given."""
    data = kwargs.pop("data_dir")
    for split in ("train", "test"):
        key = f"{split}_dir"
        if kwargs[key] is None and data is not None:
            path = os.path.join(data, split)
            if not os.path.isfile(os.path.join(path, "manifest.json")):
                raise ValueError(
                    f"--data {data}: expected shard directories {data}/train and {data}/test "
                    f"(each with a manifest.json, as `sslpipe shard ... --split {split}` writes). "
                    f"{path} has no manifest.json; or pass --train and --test"
                )
            kwargs[key] = path
        if kwargs[key] is None:
            raise ValueError(f"--{split}: a shard directory is required (or --data DIR with "
                             f"DIR/train and DIR/test)")


def _probe_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--cache", default=None, type=click.Path(),
                      help="Feature cache directory (default: OUT/.features).")(fn)
    fn = click.option("--pool", default=DEFAULT_POOL, show_default=True,
                      help="Features per stage after adaptive average pooling (1: global).")(fn)
    return click.option("--layers", default="last", show_default=True,
                        help="'all', 'last' (pooled output) or names: stage1,stage4,pooled.")(fn)


@eval_group.command()
@_common
@_probe_options
@click.option("--epochs", default=30, show_default=True)
@click.option("--lr", default=0.1, show_default=True)
@click.option("--wd", default="5e-4", show_default=True,
              help="Weight decay; several comma-separated values run a validation sweep.")
def linear(**kw: Any) -> None:
    """Linear classifier per layer on frozen, pooled features: top-1 and top-5."""
    from sslpipe.eval.linear import LinearOptions, options_dict
    from sslpipe.eval.probes import linear_probe

    wds = tuple(float(v) for v in kw["wd"].split(",") if v.strip())
    opts = LinearOptions(kw["epochs"], kw["batch_size"], kw["lr"], wds, kw["seed"])

    def go(backbone: Any, key: Any, cache: Any, seed: int, train: Any) -> dict[str, Any]:
        return linear_probe(
            backbone, train.for_probe(seed, kw["size"], kw["batch_size"], _device(kw)),
            kw["test_dir"], kw["layers"], kw["pool"], replace(opts, seed=seed), kw["size"],
            kw["batch_size"], kw["workers"], kw["device"], cache, key, backend=kw["backend"])

    run_protocol("linear", kw, options_dict(opt=opts), go)


@eval_group.command()
@_common
@_probe_options
@click.option("--k", "k", default=DEFAULT_K, show_default=True, help="Neighbours.")
@click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True)
def knn(**kw: Any) -> None:
    """Weighted kNN (cosine similarity, votes exp(s/T)) per layer on frozen features."""
    from sslpipe.eval.probes import knn_probe

    config = {"k": kw["k"], "temperature": kw["temperature"]}

    def go(backbone: Any, key: Any, cache: Any, seed: int, train: Any) -> dict[str, Any]:
        return knn_probe(
            backbone, train.for_probe(seed, kw["size"], kw["batch_size"], _device(kw)),
            kw["test_dir"], kw["layers"], kw["pool"], kw["k"], kw["temperature"], kw["size"],
            kw["batch_size"], kw["workers"], kw["device"], cache, key, backend=kw["backend"])

    run_protocol("knn", kw, config, go)


@eval_group.command()
@_common
@click.option("--freeze", default=None,
              help="Last frozen stage (stage2, layer2, ...); default: train every layer.")
@click.option("--epochs", default=10, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps instead of --epochs (as many passes as they take), so "
                   "that the cost does not grow with the label budget.")
@click.option("--min-steps", type=click.IntRange(min=1), default=None,
              help="At least this many steps from --epochs (a few labels get enough steps "
                   "to fit them).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="At most this many steps from --epochs (a capped cost at large budgets).")
@click.option("--lr", default=0.05, show_default=True)
@click.option("--wd", default=5e-4, show_default=True, help="Weight decay.")
def finetune(**kw: Any) -> None:
    """Fine-tune from a stage on: augmented training (crop + flip), plain test."""
    from dataclasses import asdict

    from sslpipe.eval.finetune import FinetuneOptions
    from sslpipe.eval.finetune import finetune as run_finetune

    try:
        opts = FinetuneOptions(kw["freeze"], kw["epochs"], kw["lr"], kw["wd"], kw["batch_size"],
                               kw["size"], kw["seed"], kw["steps"], kw["min_steps"],
                               kw["max_steps"])
    except ValueError as e:
        raise user_error(e) from e
    if kw["checkpoint"] == "scratch" and kw["freeze"]:
        raise user_error(ValueError(
            f"--checkpoint scratch trains every layer from random init; --freeze "
            f"{kw['freeze']} would leave random layers frozen (that is --checkpoint random)"))

    def go(backbone: Any, _key: Any, _cache: Any, seed: int, train: Any) -> dict[str, Any]:
        data = train.for_training(seed, kw["size"], kw["batch_size"], _device(kw))
        result = run_finetune(backbone, data, kw["test_dir"], replace(opts, seed=seed),
                              num_classes=train.num_classes, workers=kw["workers"],
                              device=kw["device"], backend=kw["backend"])
        return {f"freeze:{kw['freeze'] or 'none'}": result}

    run_protocol("finetune", kw, asdict(opts), go)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
def report(run_dirs: tuple[str, ...], out: str) -> None:
    """Markdown + CSV tables and bar charts of the eval results under RUN_DIRS."""
    from sslpipe.eval.report import write_tables
    from sslpipe.eval.results import load_results

    try:
        records = load_results(list(run_dirs))
        paths = write_tables(records, out)
    except ValueError as err:
        raise user_error(err) from err
    click.echo(f"{len(records)} result(s) -> {paths['markdown']}")
    for key, path in sorted(paths.items()):
        if key != "markdown":
            click.echo(f"  {path}")


def _device(kw: dict[str, Any]) -> Any:
    from sslpipe.devices import default_device

    return default_device(kw["device"])
