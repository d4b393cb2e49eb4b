"""Which shards a loader reads: :func:`resolve_shards` turns a directory, a manifest (local or
remote), a brace pattern or a list into a :class:`ShardSource` (URLs, sample counts, DALI
indexes, labeled, damaged keys), and :func:`load_manifest` reads a shard directory's manifest
wherever it is.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webdataset.shardlists import expand_urls

from sslpipe.data.manifest import MANIFEST, parse_manifest, read_manifest, read_manifest_bytes
from sslpipe.data.tar_samples import IMAGE_EXTS, LABEL_EXT, iter_shard
from sslpipe.data.urls import close_stream, is_local, open_url

__all__ = ["ShardSource", "fetch_manifest", "load_manifest", "peek_labeled", "recorded_damage",
           "resolve_shards"]


@dataclass(frozen=True)
class ShardSource:
    """The shards of a loader: URLs, and what is known of them.

    Attributes:
        urls: one URL or path per shard.
        samples: samples per shard where a manifest says so, else None.
        index_files: the DALI ``.idx`` file of each local shard where it exists, else None.
        labeled: the manifest's ``labeled`` flag, or None when unknown.
        damaged_keys: keys of the images the manifest records as damaged (``sslpipe shard``
            checks every image as it writes it), or None when no manifest records damage
            (then the nvjpeg and dali workers check each JPEG themselves).
    """

    urls: tuple[str, ...]
    samples: tuple[int | None, ...]
    index_files: tuple[str | None, ...]
    labeled: bool | None = None
    damaged_keys: frozenset[str] | None = None

    @property
    def num_samples(self) -> int | None:
        """Total samples when every shard's count is known, else None."""
        if any(n is None for n in self.samples):
            return None
        return sum(n for n in self.samples if n is not None)

    @property
    def local(self) -> bool:
        """True when every shard is a local file (DALI reads only those)."""
        return all(os.path.isfile(u) for u in self.urls)


def resolve_shards(shards: Any) -> ShardSource:
    """Turn the ``shards`` argument of :func:`~sslpipe.data.create_loader` into a ShardSource.

    Args:
        shards: a shard directory (read through its manifest.json), the path or URL of a
            shard directory's manifest.json (``"https://host/in60k/manifest.json"``,
            ``"s3://bucket/in60k/manifest.json"``: shard URLs and sample counts are read from
            it), a path or URL with brace ranges (``"in60k-{000000..000099}.tar"``,
            ``"pipe:cat a-{0..3}.tar"``, ``"http://host/a-{0..3}.tar"``), several joined with
            ``::``, or a list of these.

    Raises:
        ValueError: nothing matched, or a local shard does not exist.
    """
    if isinstance(shards, (str, os.PathLike)) and os.path.isdir(shards):
        return _from_directory(os.fspath(shards))
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(MANIFEST):
        where = os.fspath(shards)
        if is_local(where):
            return _from_directory(os.path.dirname(where) or ".")
        return _from_manifest_url(where)
    if isinstance(shards, (str, os.PathLike)):
        urls = expand_urls(os.fspath(shards))
    elif isinstance(shards, Sequence) and all(isinstance(s, (str, os.PathLike)) for s in shards):
        urls = [u for s in shards for u in expand_urls(os.fspath(s))]
    else:
        raise ValueError(
            "shards must be a shard directory, a path/URL pattern such as "
            f"'data-{{000000..000009}}.tar', or a list of them. Got {type(shards).__name__}"
        )
    if not urls:
        raise ValueError(f"shards: no shard matched {shards!r}")
    for url in urls:
        if is_local(url) and not os.path.isfile(url):
            raise ValueError(f"shards: {url!r} does not exist (expected a .tar shard)")
    counts, labeled = _counts_from_manifests(urls)
    index = tuple(_index_file(u) for u in urls)
    return ShardSource(tuple(urls), counts, index, labeled)


def peek_labeled(source: ShardSource) -> ShardSource:
    """``source`` with ``labeled`` decided, for shards without a manifest, from the first sample
    of the first shard (``cls`` present or not), so that every rank and worker of every backend
    reads the same way; the other samples are then checked against it. An unreadable first
    shard leaves it undecided (None: each reader decides from its first sample)."""
    if source.labeled is not None:
        return source
    events: list[tuple[str, str, str]] = []
    for sample in iter_shard(source.urls[0], events):
        if any(ext in sample for ext in IMAGE_EXTS):
            return dataclasses.replace(source, labeled=LABEL_EXT in sample)
        break
    return source


def load_manifest(where: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a shard directory, given as the directory, its manifest.json, or the
    URL of that file (any scheme :func:`iter_shard` opens).

    Raises:
        ValueError: it cannot be read or is not a valid manifest (the message names it).
    """
    return parse_manifest(*fetch_manifest(where))


def fetch_manifest(where: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The unparsed bytes of a shard directory's manifest.json (the directory, the file or
    its URL), e.g. to hash them, and where they were read (for messages)."""
    where = os.fspath(where)
    if is_local(where):
        if where.endswith(MANIFEST):
            where = os.path.dirname(where) or "."
        return read_manifest_bytes(where)
    if not where.endswith(MANIFEST):
        raise ValueError(f"{where!r}: a remote shard directory is given by the URL of its "
                         f"{MANIFEST} (e.g. 'https://host/in60k/{MANIFEST}')")
    try:
        stream = open_url(where)
        try:
            return bytes(stream.read()), where
        finally:
            close_stream(stream)
    except Exception as err:  # whatever the scheme's opener raises
        raise ValueError(f"shards: cannot read the manifest {where!r}: "
                         f"{type(err).__name__}: {err}") from err


def _from_manifest_url(url: str) -> ShardSource:
    """A ShardSource from a remote shard directory's manifest.json."""
    manifest = load_manifest(url)
    base = url[: -len(MANIFEST)]
    urls = tuple(base + shard["file"] for shard in manifest["shards"])
    if not urls:
        raise ValueError(f"shards: the manifest {url!r} lists no shard")
    counts = tuple(int(shard["samples"]) for shard in manifest["shards"])
    return ShardSource(urls, counts, (None,) * len(urls), bool(manifest["labeled"]),
                       recorded_damage(manifest))


def _index_file(url: str) -> str | None:
    if not is_local(url):
        return None
    idx = os.path.splitext(url)[0] + ".idx"
    return idx if os.path.isfile(idx) else None


def _from_directory(directory: str) -> ShardSource:
    manifest = read_manifest(directory)
    urls, counts, index = [], [], []
    for shard in manifest["shards"]:
        urls.append(os.path.join(directory, shard["file"]))
        counts.append(int(shard["samples"]))
        idx = os.path.join(directory, shard["index_file"]) if shard.get("index_file") else None
        index.append(idx if idx and os.path.isfile(idx) else None)
    if not urls:
        raise ValueError(f"shards: the manifest of {directory!r} lists no shard")
    return ShardSource(tuple(urls), tuple(counts), tuple(index), bool(manifest["labeled"]),
                       recorded_damage(manifest))


def recorded_damage(manifest: dict[str, Any]) -> frozenset[str] | None:
    """The keys of the damaged images a manifest lists, None when it does not record damage
    (written by an sslpipe before that, or by another tool)."""
    damaged = manifest.get("damaged")
    if not isinstance(damaged, list):
        return None
    return frozenset(str(d["key"]) for d in damaged if isinstance(d, dict) and "key" in d)


def _counts_from_manifests(urls: list[str]) -> tuple[tuple[int | None, ...], bool | None]:
    """Sample counts of local shards whose directory has a manifest that lists them."""
    known: dict[str, tuple[int, bool]] = {}
    for directory in {os.path.dirname(os.path.abspath(u)) for u in urls if is_local(u)}:
        if not os.path.isfile(os.path.join(directory, MANIFEST)):
            continue
        try:
            manifest = read_manifest(directory)
        except ValueError:
            continue
        for shard in manifest["shards"]:
            path = os.path.join(directory, shard["file"])
            known[path] = (int(shard["samples"]), bool(manifest["labeled"]))
    counts = tuple(known.get(os.path.abspath(u), (None, None))[0] for u in urls)
    flags = {known[os.path.abspath(u)][1] for u in urls if os.path.abspath(u) in known}
    return counts, (flags.pop() if len(flags) == 1 else None)
