"""DALI index files for WebDataset shards, written without DALI.

``nvidia.dali.fn.readers.webdataset`` takes one index file per tar (``index_paths=``) so that it
can seek to samples instead of scanning the tar. Its text format (version ``v1.2``, the one
DALI's ``wds2idx`` tool writes) is::

    v1.2 <number of samples>
    <ext> <data offset> <size> <member name> [<ext> <data offset> <size> <member name> ...]

one line per sample, one ``ext offset size name`` group per file of the sample, where the
offset is the byte position of the member's data (after its 512-byte tar header).
"""

from __future__ import annotations

from collections.abc import Sequence

VERSION = "v1.2"

Member = tuple[str, int, int, str]  # (extension, data offset, size in bytes, member name)


def index_text(samples: Sequence[Sequence[Member]]) -> str:
    """The index file's text for a shard whose samples hold the given members, in tar order."""
    lines = [f"{VERSION} {len(samples)}"]
    for members in samples:
        groups = (f"{ext} {offset} {size} {name}" for ext, offset, size, name in members)
        lines.append(" ".join(groups))
    return "\n".join(lines) + "\n"


def parse_index(text: str) -> list[list[Member]]:
    """Parse an index file's text back into per-sample member lists.

    Raises:
        ValueError: the header is not ``v1.2 N`` or a line is malformed.
    """
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != VERSION or not header[1].isdigit():
        raise ValueError(f"DALI index: expected a first line '{VERSION} N'. Got {lines[:1]!r}")
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise ValueError(
                f"DALI index line {number}: expected groups of 'ext offset size name'. Got {line!r}"
            )
        samples.append([
            (fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3])
            for i in range(0, len(fields), 4)
        ])
    if len(samples) != int(header[1]):
        raise ValueError(
            f"DALI index: header says {header[1]} samples. Got {len(samples)} sample lines"
        )
    return samples


def members_of_tar(path: str) -> list[list[Member]]:
    """Read a tar's members and group them into samples the way DALI does (by key)."""
    import tarfile

    samples: list[list[Member]] = []
    last = None
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = split_member_name(info.name)
            member = (ext, info.offset_data, info.size, info.name)
            if key != last:
                samples.append([member])
                last = key
            else:
                samples[-1].append(member)
    return samples


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/key.jpg"`` -> ``("dir/key", "jpg")``: the key ends at the basename's first dot."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:]

