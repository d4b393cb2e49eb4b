"""The documentation checks: docs/*.md (and, through tests/test_readme.py, README.md).

What a page promises is checked, page by page:

* Python blocks. Every ```` ```python ```` block carries a marker on the line above it:
  ``<!-- tested -->`` runs it (a page's tested blocks run in order in one namespace, in a fresh
  temporary directory holding a link to the repository's ``examples/``);
  ``<!-- not tested: REASON -->`` compiles it and runs its import statements only, for blocks
  that need ImageNet, a GPU or many minutes. An unmarked block fails.
* Command lines. Each ``sslpipe ...`` command in a shell block is parsed by the real click
  interface (not run): the command must exist and take every option given.
* Links. Every relative link resolves to a file inside the repository, its ``#anchor`` to a
  heading of the target page; nothing points to ``../shared`` or other places outside.
* The site. ``mkdocs build --strict`` (a broken link or anchor, a page missing from the nav, an
  API entry whose object is gone) passes, and fails on a page with a broken link.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

TESTED = "<!-- tested -->"
NOT_TESTED = re.compile(r"<!-- not tested: (?P<reason>.*\S.*) -->")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
OUTSIDE = re.compile(r"\.\./shared|/work/|shared/(?:DESIGN|BASELINES|STYLE)\.md")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int          # 1-based line of the block's first code line
    lang: str
    marker: str        # the line above the fence, stripped ("" when blank)
    code: str

    @property
    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


def doc_pages() -> list[Path]:
    """Every Markdown page under docs/, sorted."""
    return sorted(DOCS.rglob("*.md"))


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path`` in order, dedented by their fence's indentation."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = m["info"].strip().split(" ")[0].lower() if m["info"].strip() else ""
        marker = lines[i - 1].strip() if i > 0 else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence)}[ \t]*$", lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        found.append(Block(path, i + 2, lang, marker, "\n".join(body) + "\n"))
        i = j + 1
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang in ("python", "py")]


def run_tested_blocks(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the ``<!-- tested -->`` Python blocks of ``path`` in order, in one namespace, in
    ``tmp_path`` (which gets a link to ``examples/``); returns how many ran."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSLPIPE_CACHE", str(tmp_path / ".cache"))
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in python_blocks(path):
        if block.marker != TESTED:
            continue
        # blank lines first, so that a traceback's line numbers are the Markdown file's
        source = "\n" * (block.line - 1) + block.code
        exec(compile(source, str(block.path), "exec"), namespace)
        ran += 1
    return ran


def check_markers(path: Path) -> list[str]:
    """Python blocks of ``path`` without a valid marker, as ``file:line: why`` lines."""
    problems = []
    for block in python_blocks(path):
        if block.marker == TESTED or NOT_TESTED.fullmatch(block.marker):
            continue
        problems.append(f"{block.where}: a python block needs {TESTED} or "
                        f"<!-- not tested: REASON --> on the line above it; got {block.marker!r}")
    return problems


def check_untested_blocks(path: Path) -> None:
    """Compile every ``not tested`` block and run its imports (a renamed API still fails)."""
    for block in python_blocks(path):
        if block.marker == TESTED:
            continue
        source = "\n" * (block.line - 1) + block.code
        tree = ast.parse(source, str(block.path))
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), str(block.path), "exec"), {})


def command_lines(path: Path) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``sslpipe ...`` command in the shell blocks of ``path``."""
    found = []
    for block in blocks(path):
        if block.lang not in SHELL_LANGS:
            continue
        code = re.sub(r"\\\n\s*", " ", block.code)  # join continued lines
        for offset, line in enumerate(code.splitlines()):
            for segment in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
                words = segment.strip().split()
                if words[:1] == ["do"]:
                    words = words[1:]
                if words[:1] != ["sslpipe"]:
                    continue
                argv = [w for w in shlex.split(" ".join(words[1:])) if w != "..."]
                found.append((f"{block.where}+{offset}", argv))
    return found


def check_command(argv: list[str]) -> None:
    """Parse ``argv`` with sslpipe's click interface without running anything."""
    import click

    from sslpipe.cli import main

    command: click.Command = main
    ctx = click.Context(main, info_name="sslpipe")
    while isinstance(command, click.Group) and argv and not argv[0].startswith("-"):
        sub = command.get_command(ctx, argv[0])
        if sub is None:
            raise click.UsageError(f"no command {argv[0]!r} under {ctx.command_path!r}")
        ctx = click.Context(sub, info_name=argv[0], parent=ctx)
        command, argv = sub, argv[1:]
    _, rest, _ = command.make_parser(ctx).parse_args(list(argv))
    if rest and not isinstance(command, click.Group):
        raise click.UsageError(f"{ctx.command_path}: unexpected arguments {rest}")


def slug(heading: str) -> str:
    """The anchor of a heading, as mkdocs' toc (and, for these headings, GitHub) make it."""
    text = re.sub(r"`|\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", text, flags=re.S | re.M)
    return {slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def check_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``path`` that do not resolve inside ``root`` (the repository)."""
    text = path.read_text(encoding="utf-8")
    prose = re.sub(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", "", text, flags=re.S | re.M)
    prose = re.sub(r"(`+).+?\1", "", prose)
    problems = []
    for m in LINK.finditer(prose):
        target = m["target"].strip("<>")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            if not target.startswith(("http://", "https://", "mailto:")):
                problems.append(f"{path.name}: link {target!r} is neither relative nor a URL")
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if root not in resolved.parents and resolved != root:
            problems.append(f"{path.name}: link {target!r} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{path.name}: link {target!r}: {_shown(resolved)} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.name}: link {target!r}: no heading with anchor #{anchor} "
                            f"in {_shown(resolved)}")
    for m in OUTSIDE.finditer(text):
        problems.append(f"{path.name}: {m[0]!r} refers to a place outside the repository")
    return problems


# --- the docs pages -------------------------------------------------------------------------

PAGES = doc_pages()
RUNNABLE = [p for p in PAGES if any(b.marker == TESTED for b in python_blocks(p))]


def _id(path: Path) -> str:
    return str(path.relative_to(DOCS))


def test_docs_pages_exist() -> None:
    names = {p.name for p in DOCS.glob("*.md")}
    expected = {"index.md", "tasks.md", "data.md", "input-path.md", "training.md",
                "evaluation.md", "performance.md", "design.md", "api.md"}
    assert expected <= names, f"missing docs pages: {sorted(expected - names)}"
    assert RUNNABLE, "no docs page has a <!-- tested --> example"


@pytest.mark.parametrize("path", PAGES, ids=_id)
def test_python_blocks_are_marked(path: Path) -> None:
    assert check_markers(path) == []


@pytest.mark.parametrize("path", RUNNABLE, ids=_id)
def test_tested_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_tested_blocks(path, tmp_path, monkeypatch) > 0


@pytest.mark.parametrize("path", PAGES, ids=_id)
def test_untested_blocks_compile_and_import(path: Path) -> None:
    check_untested_blocks(path)


@pytest.mark.parametrize("path", PAGES, ids=_id)
def test_command_lines_parse(path: Path) -> None:
    problems = []
    for where, argv in command_lines(path):
        try:
            check_command(argv)
        except Exception as err:  # click's UsageError and friends: report them all at once
            problems.append(f"{where}: sslpipe {shlex.join(argv)}: {err}")
    assert problems == []


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(path: Path) -> None:
    assert check_links(path) == []


def test_checks_catch_what_they_should(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n[gone](missing.md) [self](#nowhere) [out](../../../etc/passwd)\n"
                    "See ../shared/DESIGN.md.\n\n```python\nprint(1)\n```\n")
    assert check_markers(page) and len(check_links(page, root=tmp_path)) == 4
    with pytest.raises(Exception, match="no command"):
        check_command(["trian", "rotation"])
    with pytest.raises(Exception, match="--no-such-option"):
        check_command(["train", "rotation", "--no-such-option", "1"])
    check_command(["train", "rotation", "--data", "x", "-o", "size=32", "--small-input"])


# --- the site -------------------------------------------------------------------------------

def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300,
    )


def _need_mkdocs() -> None:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        pytest.skip("mkdocs/mkdocstrings not installed: pip install -e '.[docs]' "
                    "(.ci/run installs them, so CI never skips this)")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    _need_mkdocs()
    result = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # the docstrings' Sphinx roles render as code, not as literal ':func:' (tools/mkdocs_hooks.py)
    assert "ab_bins" in api and not re.search(r":(class|func|meth|mod):<code>", api)
    # a dataclass's signature carries its defaults (merge_init_into_class)
    assert "size: int = 224" in re.sub(r"<[^>]+>", "", api)


def test_mkdocs_strict_fails_on_a_broken_link(tmp_path: Path) -> None:
    _need_mkdocs()
    shutil.copytree(DOCS, tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as f:
        f.write("\n[broken](no-such-page.md)\n")
    (tmp_path / "docs" / "api.md").write_text("# API\n")  # the API pages are not the point here
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "mkdocs_hooks.py", tmp_path / "tools")
    result = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr

