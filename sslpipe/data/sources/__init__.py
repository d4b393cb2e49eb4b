"""Readers of dataset formats: ``open_source(name, root, split)`` returns a :class:`Source`."""

from __future__ import annotations

from collections.abc import Callable

from sslpipe.data.sources.base import Record, Source

__all__ = ["Record", "Source", "SOURCES", "open_source", "list_sources"]

# name -> (module, reader function, splits, default split); modules import on first use
SOURCES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "imagenet": ("imagenet", "read_imagenet", ("train", "val"), "train"),
    "imagefolder": ("imagefolder", "read_imagefolder", (), ""),
    "cifar10": ("cifar", "read_cifar10", ("train", "test"), "train"),
    "cifar100": ("cifar", "read_cifar100", ("train", "test"), "train"),
    "stl10": ("stl10", "read_stl10", ("train", "test", "unlabeled"), "train"),
    "svhn": ("svhn", "read_svhn", ("train", "test", "extra"), "train"),
    "flowers102": ("flowers", "read_flowers102", ("train", "val", "test"), "train"),
    "fashion-mnist": ("idx", "read_fashion_mnist", ("train", "test"), "train"),
    "mnist": ("idx", "read_mnist", ("train", "test"), "train"),
}


def list_sources() -> list[str]:
    """Names of the supported source formats."""
    return list(SOURCES)


def open_source(name: str, root: str, split: str | None = None) -> Source:
    """Read split ``split`` (None: the source's default) of dataset ``name`` stored at ``root``.

    Raises:
        ValueError: an unknown source or split, or a root whose layout does not match (the
            message shows the layout expected).
    """
    if name not in SOURCES:
        import difflib

        close = difflib.get_close_matches(name, SOURCES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"`source` must be one of {list(SOURCES)}. Got {name!r}.{hint}")
    module, function, _, default = SOURCES[name]
    reader: Callable[..., Source] = getattr(
        __import__(f"sslpipe.data.sources.{module}", fromlist=[function]), function
    )
    return reader(root, split or default)
