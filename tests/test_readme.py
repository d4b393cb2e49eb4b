"""The README's examples work as written, with the checks of tests/test_docs.py.

A Python block marked ``<!-- tested -->`` runs (in order, in a fresh temporary directory);
``<!-- not tested: REASON -->`` is compiled and its imports run; an unmarked block fails. Every
``sslpipe ...`` command line parses with the real CLI, and the README stays a front page.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.test_docs import (
    README,
    TESTED,
    check_command,
    check_markers,
    check_untested_blocks,
    command_lines,
    python_blocks,
    run_tested_blocks,
)


def test_readme_has_tested_examples() -> None:
    assert any(b.marker == TESTED for b in python_blocks(README)), (
        "README.md must mark its runnable examples with <!-- tested -->")


def test_readme_python_blocks_are_marked() -> None:
    assert check_markers(README) == []


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_tested_blocks(README, tmp_path, monkeypatch) > 0


def test_readme_untested_blocks_compile_and_import() -> None:
    check_untested_blocks(README)


def test_readme_command_lines_parse() -> None:
    problems = []
    for where, argv in command_lines(README):
        try:
            check_command(argv)
        except Exception as err:  # click's UsageError and friends: report them all at once
            problems.append(f"{where}: sslpipe {shlex.join(argv)}: {err}")
    assert problems == []


def test_readme_is_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220, "README.md is the front page: the manual is docs/"
    for command in ("pip install -e . && sslpipe quickstart",
                    "pip install -e '.[test,dali]' && python -m pytest"):
        assert command in text, f"README.md must keep the command {command!r}"
