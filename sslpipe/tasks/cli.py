"""``sslpipe tasks``: the registered pretext tasks, their descriptions and main options."""

from __future__ import annotations

import click


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
    """List registered pretext tasks (PATTERN filters with shell wildcards, e.g. 'rot*')."""
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
