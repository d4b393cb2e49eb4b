"""Atomic writing of one WebDataset tar shard and its DALI index file.

A shard is written to ``{file}.tmp`` while it fills; :meth:`ShardFile.close` writes the DALI
index (atomically) and then renames the tar into place, so a visible ``.tar`` is always
complete. Tar headers carry fixed owner, mode and time, so the same samples give the same
bytes (and sha256) on every run: that is what lets ``--resume`` produce the result of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from typing import Any

from sslpipe.atomic import atomic_write_text, umask_mode, write_error
from sslpipe.data.dali_index import Member, index_text

_BLOCK = 512
_MTIME = 0  # fixed so that shards are byte-identical across runs


class ShardFile:
    """One shard being written: ``add`` samples, then ``close`` to publish it.

    Args:
        directory: output directory.
        name: shard name prefix; the files are ``{name}-{index:06d}.tar`` / ``.idx``.
        index: shard number (0-based).
    """

    def __init__(self, directory: str, name: str, index: int) -> None:
        self.file = f"{name}-{index:06d}.tar"
        self.index_file = f"{name}-{index:06d}.idx"
        self.path = os.path.join(directory, self.file)
        self.index_path = os.path.join(directory, self.index_file)
        # kept open across add() calls; close() or abort() closes them
        self._raw = open(f"{self.path}.tmp", "wb")  # noqa: SIM115
        self._out = _HashingWriter(self._raw)
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._out, mode="w", format=tarfile.GNU_FORMAT
        )
        self._samples: list[list[Member]] = []
        self.keys: list[str] = []

    @property
    def samples(self) -> int:
        return len(self._samples)

    @property
    def size(self) -> int:
        """Bytes written so far (the final size adds the tar end blocks and padding)."""
        return self._out.size

    def add(self, key: str, files: list[tuple[str, bytes]]) -> None:
        """Append one sample; ``files`` are ``(extension, data)`` pairs like ``("jpg", b"..")``."""
        members = []
        for ext, data in files:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
            info.uname = info.gname = ""
            try:
                self._tar.addfile(info, io.BytesIO(data))
            except OSError as err:  # a full disk: say which file, leave no partial one
                self.abort()
                raise write_error(f"{self.path}.tmp", err) from err
            # the data ends at the tar's offset minus its padding to a 512-byte block
            offset = self._tar.offset - _padded(len(data))
            members.append((ext, offset, len(data), info.name))
        self._samples.append(members)
        self.keys.append(key)

    def close(self) -> dict[str, Any]:
        """Finish the tar, write the index, rename both into place; returns the shard entry."""
        try:
            self._tar.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        except OSError as err:
            self.abort()
            raise write_error(f"{self.path}.tmp", err) from err
        atomic_write_text(self.index_path, index_text(self._samples))
        os.chmod(f"{self.path}.tmp", umask_mode())
        os.replace(f"{self.path}.tmp", self.path)
        return {
            "file": self.file, "index_file": self.index_file, "samples": self.samples,
            "bytes": self._out.size, "sha256": self._out.sha256.hexdigest(),
        }

    def abort(self) -> None:
        """Drop the partial shard (its ``.tmp`` file); may be called more than once."""
        with contextlib.suppress(OSError):  # a full disk may refuse the final flush
            self._raw.close()
        if os.path.exists(f"{self.path}.tmp"):
            os.remove(f"{self.path}.tmp")


def sample_bytes(files: list[tuple[str, bytes]]) -> int:
    """Bytes a sample takes in a tar: one header block per file plus data padded to 512."""
    return sum(_BLOCK + _padded(len(data)) for _, data in files)


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: Any) -> None:
        self._raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self._raw.write(view)
        return len(view)
