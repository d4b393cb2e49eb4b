"""What every source reader returns: a :class:`Source` holding :class:`Record` s.

A record is one image to shard: either a file on disk (``path``; its bytes may be kept as they
are) or decoded pixels (``array``, ``H x W`` or ``H x W x 3`` uint8, for datasets stored as
arrays such as CIFAR or IDX). Records are small and picklable so that worker processes can
encode them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


@dataclass(frozen=True)
class Record:
    """One image of a source.

    Attributes:
        key: unique sample key in the shards (letters, digits, ``_`` and ``-``; no dots).
        label: class index into ``Source.classes``, or None for unlabeled data.
        path: image file to read (``array`` is None then).
        array: ``H x W`` (grayscale) or ``H x W x 3`` (RGB) uint8 pixels (``path`` is None).
    """

    key: str
    label: int | None
    path: str | None = None
    array: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Source:
    """A dataset split read from its on-disk format.

    Attributes:
        name: source name (``imagenet``, ``cifar10``, ...).
        root: the dataset root it was read from (absolute).
        split: the split (``train``, ``val``, ``test``, ``unlabeled``, ...).
        classes: class names in index order (empty for unlabeled data).
        labeled: whether records carry labels.
        records: the images, in a deterministic order (sorted paths or file order).
        skipped: ``{"path", "reason"}`` entries found while listing (e.g. unreadable folders).
    """

    name: str
    root: str
    split: str
    classes: list[str]
    labeled: bool
    records: list[Record]
    skipped: list[dict[str, str]] = field(default_factory=list)


def layout_error(source: str, root: str, problem: str, layout: str) -> ValueError:
    """A ValueError saying what is wrong with ``root`` and showing the layout expected."""
    return ValueError(
        f"{source}: {problem} under root {root!r}. Expected this layout:\n{layout.rstrip()}"
    )


def check_split(source: str, split: str, splits: tuple[str, ...]) -> None:
    """Raise a ValueError unless ``split`` is one of ``splits``."""
    if split not in splits:
        raise ValueError(f"{source}: `split` must be one of {list(splits)}. Got {split!r}")


def check_root(source: str, root: str, layout: str) -> str:
    """The absolute root, or a ValueError showing ``layout`` when it is not a directory."""
    if not os.path.isdir(root):
        raise layout_error(source, root, "the root is not a directory", layout)
    return os.path.abspath(root)


def safe_key(text: str) -> str:
    """A shard key from a file path or name: unsafe characters (dots, slashes) become ``_``."""
    return _KEY_UNSAFE.sub("_", text)


def unique_keys(keys: Sequence[str], names: Sequence[str]) -> list[str]:
    """Shard keys for files, one per file, unique even where the preferred keys clash.

    ``keys[i]`` is the key file ``i`` would get on its own (``safe_key`` of its name without
    the extension: ``b/tiny.jpg`` gives ``b_tiny``); ``names[i]`` is its path relative to the
    source's root, which is unique. Files whose keys clash, also when they differ only in case
    (``tiny.jpg`` and ``tiny.png``; ``a/b_c.jpg`` and ``a_b/c.jpg``; ``x.y.jpg`` and
    ``x_y.jpg``; ``Tiny.jpg`` and ``tiny.jpg``), are keyed by their whole name, extension
    included (``b_tiny_jpg``, ``b_tiny_png``), and where that still clashes by it and the first
    12 hex digits of the name's sha256. So no file is lost to a clash, a file whose key clashes
    with none keeps it, and the keys depend only on the names, not on the order or the machine.
    Keys that differ only in case clash because tars are unpacked on case-insensitive file
    systems too.

    Raises:
        ValueError: ``names`` repeats a name (two files cannot share one).
    """
    out = list(keys)
    for level in (1, 2):
        clashing = _clashing(out)
        if not clashing:
            return out
        for i in clashing:
            key = safe_key(names[i])
            if level == 2:
                key += "-" + hashlib.sha256(names[i].encode("utf-8")).hexdigest()[:12]
            out[i] = key
    clashing = _clashing(out)
    if clashing:
        twice = sorted({names[i] for i in clashing})
        raise ValueError(f"the same file is listed twice: {twice[:5]}")
    return out


def _clashing(keys: list[str]) -> list[int]:
    """Indices of the keys that equal another one, ignoring case."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key.casefold()].append(i)
    return sorted(i for group in groups.values() if len(group) > 1 for i in group)


def array_records(prefix: str, images: np.ndarray, labels: np.ndarray | None) -> list[Record]:
    """Records ``{prefix}_{i:06d}`` for ``N x H x W [x 3]`` uint8 images and optional labels."""
    return [
        Record(f"{prefix}_{i:06d}", None if labels is None else int(labels[i]), array=images[i])
        for i in range(len(images))
    ]
