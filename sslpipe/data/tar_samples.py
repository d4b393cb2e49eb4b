"""Samples out of one tar shard, and what is wrong with a damaged one.

:func:`iter_shard` groups a shard's members by key into samples, dicts ``{"__key__",
"__url__", ext: bytes}`` as webdataset yields them, and records an unreadable or truncated
shard (a damaged header, a cut at a member boundary, fewer samples than its manifest lists) in
the reader's ``events`` instead of raising, so that a loader can report it and carry on.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import Any

from sslpipe.data.urls import close_quietly, close_stream, open_url

__all__ = ["IMAGE_EXTS", "LABEL_EXT", "MALFORMED", "iter_shard"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXT = "cls"
# set by iter_shard on a sample whose members are not a well-formed group: why (a str)
MALFORMED = "__malformed__"


def iter_shard(url: str, events: list[tuple[str, str, str]], expected: int | None = None
               ) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard, grouped by key, in file order.

    A shard that cannot be opened is recorded as ``("unreadable", url, why)``. One that ends
    early is recorded as ``("truncated", url, why)`` after the samples before the damage are
    yielded: the stream ends mid-member, a header is damaged (Python's tarfile takes a bad
    header for the end of the archive, silently), the archive has no end-of-archive marker
    (cut at a member boundary), or it holds fewer samples than ``expected`` (the manifest's
    count).
    """
    try:
        raw = open_url(url)
    except Exception as err:  # gopen raises whatever the scheme's opener raises
        events.append(("unreadable", url, f"{type(err).__name__}: {err}"))
        return
    stream = _TailRecorder(raw)
    current: dict[str, Any] | None = None
    count = 0
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isreg():
                    continue
                key, ext = _split_name(member.name)
                if key is None:
                    continue
                data = tar.extractfile(member).read()
                if len(data) < member.size:
                    raise tarfile.ReadError(f"unexpected end of data in {member.name}")
                if current is not None and current["__key__"] != key:
                    count += 1
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                    if key in seen:  # webdataset groups adjacent members: this is a fragment
                        current[MALFORMED] = (f"key {key!r} appears again after other keys "
                                              "(a sample's members must be adjacent)")
                    seen.add(key)
                if ext in current:
                    current[MALFORMED] = f"member {member.name!r} appears twice"
                current[ext] = data
            problem = stream.end_problem(tar.offset)
        close_stream(raw)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        close_quietly(raw)
        events.append(("truncated" if count or current else "unreadable", url,
                       f"after {count} sample(s): {type(err).__name__}: {err}"))
        # The sample being assembled when the shard broke may miss its image or label.
        return
    if current is not None:
        count += 1
        yield current
    if problem is None and expected is not None and count < expected:
        problem = f"holds {count} sample(s), the manifest lists {expected}"
    if problem is not None:
        events.append(("truncated", url, f"after {count} sample(s): {problem}"))


class _TailRecorder:
    """A read-only stream that counts what is read and keeps the last bytes, so that the end of
    a tar can be checked once tarfile has stopped reading: after the last member there must be
    only zero blocks, at least the two of the end-of-archive marker."""

    KEEP = 1 << 16  # more than tarfile's 10 KiB record buffer

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.position = 0  # bytes read from raw
        self.tail = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.position += len(data)
        self.tail += data
        if len(self.tail) > self.KEEP:
            del self.tail[: len(self.tail) - self.KEEP]
        return data

    def end_problem(self, offset: int) -> str | None:
        """What is wrong with the archive's end, the next header being at ``offset``; None when
        the two zero blocks of the end-of-archive marker follow (what comes after them is
        ignored, as tar ignores it)."""
        start = self.position - len(self.tail)
        if offset < start:  # not expected: tarfile reads at most a record past the header
            return None
        marker = bytes(self.tail[offset - start: offset - start + 1024])
        while len(marker) < 1024:
            more = self.raw.read(1024 - len(marker))
            if not more:
                break
            marker += more
        while self.raw.read(1 << 16):  # drain: a pipe: command must be able to exit
            pass
        if marker.strip(b"\x00"):
            return f"a damaged tar header at byte {offset} (tarfile stops reading there)"
        if len(marker) < 1024:
            return (f"no end-of-archive marker after byte {offset}: the shard was cut at a "
                    "member boundary")
        return None


def _split_name(name: str) -> tuple[str | None, str]:
    base = os.path.basename(name)
    if base.startswith(".") or "." not in base:
        return None, ""
    head, _, _ = base.partition(".")
    prefix = name[: len(name) - len(base)] + head
    return prefix, base[len(head) + 1 :].lower()
