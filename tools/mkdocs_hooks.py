"""mkdocs hooks for the documentation site (``hooks:`` in mkdocs.yml).

The docstrings cross-reference with Sphinx roles (``:func:`~sslpipe.ops.ab_bins```), which
mkdocstrings' Google-style parser leaves as literal text (``:func:<code>~sslpipe...</code>``).
This turns each into the code span it names: ``~a.b.c`` shows ``c``, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj|const):<code>(~?)([^<]+)</code>")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace the literal Sphinx roles of a rendered page by code spans."""
    return _ROLE.sub(_code, html)
