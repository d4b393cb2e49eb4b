"""The README's Python examples run as written (blocks marked ``<!-- tested -->``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- tested -->\s*```python\n(.*?)```", re.S)


def _examples() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_readme_has_tested_examples() -> None:
    assert _examples(), "README.md must mark its runnable examples with <!-- tested -->"


@pytest.mark.parametrize("index", range(len(_examples())))
def test_readme_example_runs(index: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _examples()[index]
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})
