"""The `sslpipe` command group: help, version, tasks, and mistyped commands."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import sslpipe
from sslpipe.cli import _COMMANDS, main, user_error


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in _COMMANDS:
        assert name in result.output


def test_every_command_imports_and_has_help() -> None:
    for name in _COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_group_help_shows_each_commands_own_line() -> None:
    import click

    from sslpipe.cli import SHORT_HELP

    ctx = click.Context(main)
    assert sorted(SHORT_HELP) == sorted(_COMMANDS)
    for name in _COMMANDS:
        assert SHORT_HELP[name] == main.get_command(ctx, name).get_short_help_str(limit=500)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"],
                                  ["shard", "imagenet", "--help"], ["eval", "linear", "--help"],
                                  ["bench", "--help"], ["report", "--help"]])
def test_help_and_version_do_not_import_torch(args) -> None:
    # they used to take 3.5 s and 700 MiB: torch, torchvision and timm before a line was printed
    code = ("import sys; from sslpipe.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and sslpipe.__version__ in result.output


def test_mistyped_command_suggests_the_closest() -> None:
    result = CliRunner().invoke(main, ["tsks"])
    assert result.exit_code != 0 and "Did you mean: tasks" in result.output


def test_tasks_lists_every_task_with_options() -> None:
    result = CliRunner().invoke(main, ["tasks"])
    assert result.exit_code == 0
    for name in sslpipe.list_tasks():
        assert name in result.output
    assert "num_permutations" in result.output  # options are listed
    filtered = CliRunner().invoke(main, ["tasks", "rot*", "--no-options"])
    assert filtered.output.splitlines()[0].startswith("rotation")
    assert "jigsaw" not in filtered.output.splitlines()[0]
    missing = CliRunner().invoke(main, ["tasks", "zzz*"])
    assert missing.exit_code != 0 and "no task matches" in missing.output


class _Failing(torch.utils.data.IterableDataset):
    def __iter__(self):
        raise ValueError("shard-000001.tar: truncated at member 'x.jpg'\nsecond line")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_worker_error_reads_as_its_cause(workers) -> None:
    # torch re-raises a worker's ValueError with "Caught ValueError in DataLoader worker
    # process 0. Original Traceback ..." in front; the user reads the cause first
    with pytest.raises(ValueError) as caught:
        list(torch.utils.data.DataLoader(_Failing(), num_workers=workers))
    message = user_error(caught.value).message
    assert message == "shard-000001.tar: truncated at member 'x.jpg'\nsecond line"
    assert user_error(ValueError("plain")).message == "plain"


def test_ctrl_c_ends_any_command_with_status_130(monkeypatch, tmp_path) -> None:
    import sslpipe.data.sharding as sharding

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sharding, "write_shards", interrupted)
    (tmp_path / "c").mkdir()
    result = CliRunner().invoke(main, ["shard", "imagefolder", str(tmp_path), "--out",
                                       str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 130 and "interrupted" in result.output, result.output
