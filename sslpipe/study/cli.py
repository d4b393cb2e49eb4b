"""``sslpipe study STUDY.toml [--out DIR] [--dry-run] [--resume]``."""

from __future__ import annotations

import os

import click

from sslpipe.cli import user_error


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("study_file", metavar="STUDY.toml", type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Study directory (default: runs/study/NAME).")
@click.option("--dry-run", is_flag=True,
              help="Print the grid, the number of runs and a cost estimate; run nothing.")
@click.option("--resume", is_flag=True,
              help="Continue the study in --out: finished cells are skipped, interrupted "
                   "training runs continue from their last checkpoint.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="--dry-run: estimate for this device (default: the study's, else cuda "
                   "when available).")
def study(study_file: str, out: str | None, dry_run: bool, resume: bool,
          device: str | None) -> None:
    """Run a pretext-task comparison study: pretraining data x tasks x archs, each run
    evaluated (linear per layer, kNN, fine-tune) on every downstream dataset, then the report.

    \b
    sslpipe study examples/fashion_mnist_study.toml --dry-run
    sslpipe study examples/fashion_mnist_study.toml --out runs/fm_study
    sslpipe study examples/fashion_mnist_study.toml --out runs/fm_study --resume

    A failed cell is recorded with its error and the study goes on; the report marks it and
    the exit status is 1.
    """
    from sslpipe.study.grid import build_grid
    from sslpipe.study.spec import load_study

    try:
        spec = load_study(study_file)
        out = out or os.path.join("runs", "study", spec.name)
        if dry_run:
            from sslpipe.study.cost import estimate, format_dry_run

            grid = build_grid(spec)
            for line in format_dry_run(spec, grid, estimate(spec, grid, out, device)):
                click.echo(line)
            return
        from sslpipe.study.runner import run_study

        result = run_study(spec, out, resume=resume, log=click.echo)
    except ValueError as err:
        raise user_error(err) from err
    if result.failed:
        # the study ran to its end, but a script must still be able to tell
        click.echo(f"{len(result.failed)} cell(s) failed; see {result.report.get('markdown')}",
                   err=True)
        raise click.exceptions.Exit(1)
