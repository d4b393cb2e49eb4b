"""``manifest.json``: what a shard directory holds (docs/design.md, "Shards").

A shard directory is ``manifest.json`` plus ``{name}-{000000}.tar`` shards, each with a DALI
index file ``{name}-{000000}.idx`` beside it. The manifest (format ``sslpipe-shards``,
version 1) records::

    {"format": "sslpipe-shards", "version": 1, "name", "source", "root", "split",
     "classes": [names in index order], "labeled": bool, "num_samples", "image_format",
     "resize", "quality", "subset": {"rule", "seed", "size"} or null,
     "counts_per_class": {class_index: count},
     "shards": [{"file", "index_file", "samples", "bytes", "sha256"}],
     "skipped": [{"path", "reason"}], "damaged": [{"path", "key", "reason"}],
     "created_by": "sslpipe x.y"}

``damaged`` names the images written although libjpeg-turbo decodes them only past damage
(``sslpipe shard --damaged use``, the default); manifests written before it was recorded lack
the field, which reads as unknown. Images left out for damage (``--damaged skip``) are under
``skipped`` with a reason starting ``"damaged: "``.

Readers go through :func:`read_manifest` and :func:`shard_paths`; the writer goes through
:func:`write_manifest`, which replaces the file atomically and is the last thing a run writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sslpipe.atomic import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "sslpipe-shards"
VERSION = 1

_REQUIRED = {
    "format": str, "version": int, "name": str, "source": str, "split": str, "classes": list,
    "labeled": bool, "num_samples": int, "image_format": str, "counts_per_class": dict,
    "shards": list, "skipped": list,
}
_SHARD_FIELDS = ("file", "index_file", "samples", "bytes", "sha256")


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``DIR/manifest.json`` of a shard directory.

    Returns:
        the manifest as a dict (see the module docstring for its fields).

    Raises:
        ValueError: the directory or its manifest is missing, is not JSON, or lacks a field;
            the message names the path and what was expected.
    """
    return parse_manifest(*read_manifest_bytes(directory))


def read_manifest_bytes(directory: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The bytes of ``DIR/manifest.json`` (e.g. to hash them) and its path, unparsed.

    Raises:
        ValueError: the directory or its manifest is missing or unreadable.
    """
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise ValueError(
            f"shard directory {str(directory)!r} does not exist: expected a directory made by "
            "`sslpipe shard` holding manifest.json and {name}-000000.tar shards"
        )
    if not path.is_file():
        raise ValueError(
            f"{str(path)!r} is missing: expected the manifest.json that `sslpipe shard` writes "
            "last (an interrupted run has none: finish it with `sslpipe shard ... --resume`)"
        )
    try:
        return path.read_bytes(), str(path)
    except OSError as error:
        raise ValueError(f"{str(path)!r} is not a readable JSON manifest: {error}") from error


def parse_manifest(raw: bytes | str, where: str) -> dict[str, Any]:
    """Parse and check the text of a manifest read from ``where`` (a path or URL, for errors).

    Raises:
        ValueError: not JSON, or a field is missing or wrong; the message names ``where``.
    """
    try:
        manifest = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where!r} is not a readable JSON manifest: {error}") from error
    _check(manifest, where)
    return dict(manifest)


def shard_paths(directory: str | os.PathLike[str]) -> list[str]:
    """Paths of the ``.tar`` shards of a shard directory, in manifest order."""
    manifest = read_manifest(directory)
    return [os.path.join(os.fspath(directory), shard["file"]) for shard in manifest["shards"]]


def index_paths(directory: str | os.PathLike[str]) -> list[str]:
    """Paths of the DALI ``.idx`` files of a shard directory, in the order of its shards."""
    manifest = read_manifest(directory)
    return [os.path.join(os.fspath(directory), s["index_file"]) for s in manifest["shards"]]


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically (temporary name, then ``os.replace``)."""
    path = os.path.join(os.fspath(directory), MANIFEST)
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return path




def _check(manifest: Any, where: str) -> None:
    if not isinstance(manifest, dict):
        raise ValueError(f"{where!r}: expected a JSON object. Got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{where!r}: expected \"format\": {FORMAT!r}. Got {manifest.get('format')!r}"
        )
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{where!r}: expected \"version\": {VERSION} (this sslpipe reads version "
            f"{VERSION}). Got {manifest.get('version')!r}"
        )
    for field, kind in _REQUIRED.items():
        if not isinstance(manifest.get(field), kind):
            raise ValueError(
                f"{where!r}: field {field!r} must be a {kind.__name__}. "
                f"Got {manifest.get(field)!r}"
            )
    for i, shard in enumerate(manifest["shards"]):
        missing = [f for f in _SHARD_FIELDS if not isinstance(shard, dict) or f not in shard]
        if missing:
            raise ValueError(f"{where!r}: shards[{i}] lacks the field(s) {missing}")
