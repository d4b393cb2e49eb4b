"""The ``sslpipe`` command line (click).

Subcommands live beside the code they drive (``sslpipe/data/cli.py`` for ``shard``,
``sslpipe/train/cli.py`` for ``train`` and ``export``, ...) and are imported only when used,
so ``sslpipe --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
from typing import Any

import click

from sslpipe import __version__

# name -> "module:attribute" of a click command; imported on first use.
_COMMANDS = {
    "tasks": "sslpipe.tasks.cli:tasks",
    "show": "sslpipe.tasks.cli:show",
    "shard": "sslpipe.data.cli:shard",
    "train": "sslpipe.train.cli:train",
    "export": "sslpipe.train.cli:export",
    "eval": "sslpipe.eval.cli:eval_group",
    "report": "sslpipe.eval.cli:report",
    "study": "sslpipe.study.cli:study",
    "quickstart": "sslpipe.quickstart:quickstart",
    "bench": "sslpipe.bench_cli:bench",
}


# name -> the command's one-line help, for `sslpipe --help` without importing every command
# (tests/test_cli.py checks that each matches its command's docstring)
SHORT_HELP = {
    "bench": "Images/s of each decode backend on your shards, beside the model's training step.",
    "eval": "Evaluate a backbone: linear probes per layer, kNN, fine-tuning.",
    "export": "Write the backbone of RUN_DIR as timm weights (safetensors).",
    "quickstart": "Rotation pretraining + linear probes vs random init on the embedded sample.",
    "report": "Markdown + CSV tables and bar charts of the eval results under RUN_DIRS.",
    "shard": "Write a dataset as WebDataset shards (one subcommand per format), verify or "
             "describe them.",
    "show": "Draw what pretext TASK makes (inputs and pseudo-labels) into a PNG grid.",
    "study": "Run a pretext-task comparison study: pretraining data x tasks x archs, each run "
             "evaluated (linear per layer, kNN, fine-tune) on every downstream dataset, then "
             "the report.",
    "tasks": "List the registered pretext tasks; PATTERN filters them with shell wildcards "
             "('rot*').",
    "train": "Pretrain a backbone on TASK (e.g. rotation, jigsaw, rotation+jigsaw).",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _COMMANDS:
            module, attr = _COMMANDS[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        # Ctrl-C ends any command with the shell's status for it, 130 (click's own abort says
        # "Aborted!" and exits 1), after what the command itself does on the way out
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise click.UsageError(f"no such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sslpipe")
def main() -> None:
    """sslpipe: self-supervised pretraining with batch-level, device-agnostic input pipelines.

    \b
    sslpipe quickstart                       rotation pretraining + linear probes on the
                                             embedded FashionMNIST sample (CPU, minutes)
    sslpipe shard imagenet ROOT --subset 60k --out shards/in60k
    sslpipe train jigsaw --data shards/in60k --arch resnet50 --gpus 4
    sslpipe eval linear --checkpoint RUN_DIR --train DIR --test DIR
    """
    # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C: temporary files are removed and
    # worker pools ended on the way out, so the run can be resumed
    signal.signal(signal.SIGTERM, _terminate)


# torch.utils.data re-raises a worker's exception as its type with this in front of the message
_WRAPPED = re.compile(r"^Caught (\w+) (in .+?)\.\nOriginal Traceback", re.DOTALL)


def user_error(err: BaseException) -> click.ClickException:
    """``err`` as the message a user reads (``raise user_error(err) from err``).

    An exception a DataLoader worker raised comes back from torch with "Caught ValueError in
    DataLoader worker process 1. Original Traceback (most recent call last): ..." in front of
    its message; the message is the cause's own (its last line in that traceback), so that
    the first line names the input and what was expected, as everywhere else.
    """
    text = str(err)
    wrapped = _WRAPPED.match(text)
    if wrapped:
        name = wrapped.group(1)
        cause = text.rpartition(f"\n{name}: ")[2].strip()
        if cause and cause != text:
            text = cause
    return click.ClickException(text)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
