"""``sslpipe shard``: datasets to WebDataset shards, and checks of shard directories.

    sslpipe shard imagenet /data/ILSVRC2012 --subset 60k --out shards/in60k
    sslpipe shard cifar10 /data/cifar --split test --out shards/cifar10-test
    sslpipe shard verify shards/in60k [--decode]
    sslpipe shard info shards/in60k

Each source format is a subcommand taking the dataset ROOT; ``verify`` and ``info`` take a
shard directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import click

from sslpipe.cli import user_error
from sslpipe.data.sources import SOURCES

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*$")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def shard() -> None:
    """Write a dataset as WebDataset shards (one subcommand per format), verify or describe them.

    \b
    sslpipe shard imagenet /data/ILSVRC2012 --subset 60k --out shards/in60k
    sslpipe shard verify shards/in60k --decode
    sslpipe shard info shards/in60k
    """


def _parse_bytes(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value.lower() in ("none", "0"):
        return None
    match = _BYTES.match(value)
    if not match:
        raise click.BadParameter(f"expected a size such as 500M or 1G. Got {value!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(float(match.group(1)) * scale[match.group(2).lower()])


def _shard_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("root", type=click.Path(file_okay=False)),
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
                     help="Output directory for the shards and manifest.json."),
        click.option("--split", default=None, help="Split to write (default: the source's "
                     "first split)."),
        click.option("--subset", default=None, help="Class-balanced subset: 30k, 60k, 120k, a "
                     "count N or a percentage P%. Nested for one --seed."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of the subset and of the shuffle."),
        click.option("--keys-from", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Write exactly these keys (one per line) instead of a subset."),
        click.option("--resize", type=click.IntRange(min=1), default=None,
                     help="Resize so the shorter side is this many pixels (aspect kept). "
                     "Default: keep the original bytes."),
        click.option("--format", "image_format", type=click.Choice(["auto", "jpg", "png"]),
                     default="auto", show_default=True,
                     help="Image format; auto: JPEG for image files, PNG for array datasets."),
        click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True,
                     help="JPEG quality when an image is re-encoded."),
        click.option("--shard-size", type=click.IntRange(min=0), default=10_000,
                     show_default=True, help="Most samples per shard (0: no limit)."),
        click.option("--shard-bytes", default="1G", show_default=True, callback=_parse_bytes,
                     help="Most bytes per shard, e.g. 500M (none: no limit)."),
        click.option("--damaged", type=click.Choice(["use", "skip"]), default="use",
                     show_default=True,
                     help="A JPEG libjpeg-turbo decodes only past damage (\"Corrupt JPEG "
                     "data\"): use: write it and name it in the manifest under \"damaged\"; "
                     "skip: leave it out and name it under \"skipped\"."),
        click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
                     help="Encoding processes (default: the CPUs available). The output does "
                     "not depend on it."),
        click.option("--name", default=None, help="Shard file prefix (default: the output "
                     "directory's name)."),
        click.option("--shuffle/--no-shuffle", default=True, show_default=True,
                     help="Write samples in seeded random order, so shards mix classes."),
        click.option("--resume", is_flag=True, help="Finish an interrupted run in --out."),
        click.option("--overwrite", is_flag=True, help="Replace existing shards in --out."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Show a progress bar with images/s."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _make_source_command(source: str) -> click.Command:
    splits = SOURCES[source][2]
    split_help = f"splits: {', '.join(splits)}" if splits else "ROOT/<split> when given"

    @_shard_options
    def command(root: str, out: str, split: str | None, subset: str | None, seed: int,
                keys_from: str | None, resize: int | None, image_format: str, quality: int,
                shard_size: int, shard_bytes: int | None, damaged: str, workers: int | None,
                name: str | None, shuffle: bool, resume: bool, overwrite: bool,
                progress: bool) -> None:
        from sslpipe.atomic import WriteError
        from sslpipe.data.encode import EncodeOptions
        from sslpipe.data.sharding import ShardOptions, write_shards
        from sslpipe.data.sources import open_source
        from sslpipe.data.subset import read_keys

        try:
            data = open_source(source, root, split)
            options = ShardOptions(
                name=name, subset=subset, seed=seed,
                keys=tuple(read_keys(keys_from)) if keys_from else None, shuffle=shuffle,
                encode=EncodeOptions(resize, image_format, quality),
                shard_size=shard_size or None, shard_bytes=shard_bytes,
                workers=workers or _cpus(), damaged=damaged, resume=resume, overwrite=overwrite,
                progress=progress,
            )
            write_shards(data, out, options)
        except (ValueError, WriteError) as error:  # WriteError: a full disk, named
            raise user_error(error) from error

    command.__doc__ = f"Shard {source} from ROOT ({split_help})."
    return click.command(name=source)(command)


for _source in SOURCES:
    shard.add_command(_make_source_command(_source))


@shard.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--decode", is_flag=True, help="Also decode every image.")
def verify(directory: str, decode: bool) -> None:
    """Check every shard of DIRECTORY against its manifest; exit 1 on any problem.

    With --decode, an image that decodes only past damage libjpeg-turbo reports ("Corrupt
    JPEG data") is listed as DAMAGED, and is a problem unless the manifest records it (as
    `sslpipe shard --damaged use` does).
    """
    from sslpipe.data.verify import verify_report

    try:
        report = verify_report(directory, decode=decode)
    except ValueError as error:
        raise user_error(error) from error
    for problem in report.problems:
        click.echo(f"FAIL {problem}")
    recorded = [d for d in report.damaged if d.recorded]
    for damaged in recorded:
        click.echo(f"DAMAGED {damaged} (recorded in the manifest under \"damaged\")")
    unrecorded = len(report.damaged) - len(recorded)
    if report.problems:
        raise click.ClickException(
            f"{len(report.problems)} problem(s) in {directory}"
            + (f", {unrecorded} of them damaged image(s) the manifest does not record"
               if unrecorded else "")
            + (f"; {len(recorded)} damaged image(s) it records" if recorded else ""))
    click.echo(f"OK {directory}: every shard matches its manifest"
               + (" and every image decodes" if decode else "")
               + (f", {len(recorded)} of them only past damage, as the manifest records "
                  "(DAMAGED above)" if recorded else ""))


@shard.command()
@click.argument("directory", type=click.Path(file_okay=False))
def info(directory: str) -> None:
    """Print a summary table of the shard directory DIRECTORY."""
    from sslpipe.data.manifest import read_manifest

    try:
        m = read_manifest(directory)
    except ValueError as error:
        raise user_error(error) from error
    counts = list(m["counts_per_class"].values())
    subset = m["subset"]
    damaged = m.get("damaged")
    skipped_damaged = sum(s["reason"].startswith("damaged: ") for s in m["skipped"])
    rows = [
        ("name", m["name"]), ("source", f"{m['source']} ({m.get('root', '?')})"),
        ("split", m["split"]), ("samples", f"{m['num_samples']:,}"),
        ("classes", f"{len(m['classes'])}" + ("" if m["labeled"] else " (unlabeled)")),
        ("per class", f"{min(counts):,} - {max(counts):,}" if counts else "-"),
        ("subset", f"{subset['rule']} (seed {subset['seed']}, {subset['size']:,})"
         if subset else "none"),
        ("images", f"{m['image_format']}, resize {m['resize'] or 'none'}, quality "
         f"{m.get('quality')}"),
        ("shards", f"{len(m['shards'])}, {_human(sum(s['bytes'] for s in m['shards']))}"),
        ("skipped", f"{len(m['skipped'])}" + (f" ({skipped_damaged} for damage)"
                                              if skipped_damaged else "")),
        ("damaged", "not recorded (written before sslpipe recorded damage)" if damaged is None
         else f"{len(damaged)} written" + (" (libjpeg-turbo decodes them only past a warning)"
                                           if damaged else "")),
        ("created by", m.get("created_by", "?")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    for label, entries in (("skipped", m["skipped"]), ("damaged", damaged or [])):
        for entry in entries[:10]:
            named = f" (key {entry['key']})" if "key" in entry else ""
            click.echo(f"{'':<{width}}  {label} {entry['path']}{named}: {entry['reason']}")
        if len(entries) > 10:
            click.echo(f"{'':<{width}}  ... and {len(entries) - 10} more {label} (see "
                       "manifest.json)")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
