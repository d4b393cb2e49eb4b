"""``sslpipe tasks``: the registered pretext tasks, their descriptions and main options."""

from __future__ import annotations

import click

from sslpipe.cli import user_error


@click.command()
@click.argument("pattern", required=False)
@click.option(
    "--options/--no-options",
    "show_options",
    default=True,
    show_default=True,
    help="List each task's options with their defaults.",
)
def tasks(pattern: str | None, show_options: bool) -> None:
    """List the registered pretext tasks; PATTERN filters them with shell wildcards ('rot*').
    """
    from sslpipe.registry import describe_task, list_tasks, task_class
    from sslpipe.tasks.base import option_docs

    names = list_tasks(pattern)
    if not names:
        raise click.ClickException(f"no task matches {pattern!r}; `sslpipe tasks` lists them all")
    width = max(map(len, names))
    for name in names:
        click.echo(f"{name:<{width}}  {describe_task(name)}")
        if show_options:
            opts = ", ".join(f"{k}={v!r}" for k, v in option_docs(task_class(name).Options))
            click.echo(f"{'':<{width}}  options: {opts}")
    click.echo("\nCombine tasks on one backbone with '+', e.g. rotation+jigsaw.")


@click.command()
@click.argument("task")
@click.option("--data", default=None, metavar="PATH",
              help="Shard directory (*.tar), a .tar shard, an image folder or file. "
                   "Default: photos bundled with scikit-image (skimage.data).")
@click.option("--size", type=int, default=None,
              help="Output side in pixels (the task's `size` option). Default: the task's.")
@click.option("--num", type=int, default=4, show_default=True, help="Images to show.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the collator.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--task-option", "-o", "task_options", multiple=True, metavar="KEY=VALUE",
              help="A task option (repeatable), e.g. -o mask=random_region; values are YAML.")
def show(task: str, data: str | None, size: int | None, num: int, seed: int, out: str,
         task_options: tuple[str, ...]) -> None:
    """Draw what pretext TASK makes (inputs and pseudo-labels) into a PNG grid."""
    import dataclasses

    import yaml

    from sslpipe.registry import create_task
    from sslpipe.tasks.show import load_images, render_grid, show_task

    if num < 1:
        raise click.ClickException(f"--num must be >= 1. Got {num}")
    options: dict[str, object] = {"seed": seed}
    for item in task_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.ClickException(f"--task-option must be KEY=VALUE. Got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    try:
        if size is not None:
            names = task.split("+") if "+" in task else [task]
            if not all("size" in {f.name for f in dataclasses.fields(_options_of(n))}
                       for n in names):
                raise ValueError(f"task {task!r} has no `size` option; leave out --size")
            options["size"] = size
        pipeline = create_task(task, **options)
        loaded = load_images(data, num)
        rows = show_task(pipeline, loaded.images, num)
        options.pop("seed")
        extra = ", ".join(f"{k}={v}" for k, v in options.items())
        title = f"sslpipe show {task}" + (f" ({extra})" if extra else "") + f", {loaded.source}"
        width, height = render_grid(rows, out, title=title)
    except ValueError as err:
        raise user_error(err) from err
    if loaded.skipped:
        click.echo(f"skipped {len(loaded.skipped)} unreadable input(s): "
                   f"{'; '.join(loaded.skipped[:5])}", err=True)
    click.echo(f"wrote {out} ({width}x{height} px, {len(rows)} rows, "
               f"{len(loaded.images)} images from {loaded.source})")


def _options_of(name: str) -> type:
    from sslpipe.registry import task_class

    options: type = getattr(task_class(name), "Options")  # noqa: B009
    return options
