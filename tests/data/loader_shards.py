"""Small shard directories for the loader tests, in the exact layout `sslpipe shard` writes.

Each sample's class index is its global index, so a test can tell which samples it saw.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import numpy as np
import webdataset as wds
from PIL import Image

from sslpipe.data.dali_index import index_text, members_of_tar
from sslpipe.data.manifest import write_manifest


def image(index: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A distinct smooth H x W x 3 uint8 image for sample ``index``."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(1, w - 1) + 37 * index) % 256
    g = (y * 255 // max(1, h - 1) + 11 * index) % 256
    b = ((x + y) * 4 + 53 * index) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(array).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_shards(
    directory: str, num_shards: int, per_shard: int | list[int], *, fmt: str = "jpg",
    size: tuple[int, int] = (24, 32), labeled: bool = True, name: str = "t",
) -> list[str]:
    """Write ``num_shards`` shards of ``per_shard`` samples, index files and manifest.json.

    ``per_shard``: samples in every shard, or a list of one count per shard (uneven shards).
    ``fmt``: ``"jpg"``, ``"png"`` or ``"mix"`` (odd samples PNG). Returns the shard paths.
    """
    os.makedirs(directory, exist_ok=True)
    counts = per_shard if isinstance(per_shard, list) else [per_shard] * num_shards
    assert len(counts) == num_shards
    shards, paths = [], []
    for s, count in enumerate(counts):
        file = f"{name}-{s:06d}.tar"
        path = os.path.join(directory, file)
        with wds.TarWriter(path) as sink:
            for j in range(count):
                i = sum(counts[:s]) + j
                ext = "png" if fmt == "png" or (fmt == "mix" and i % 2) else "jpg"
                sample = {"__key__": f"{i:08d}", ext: encode(image(i, size), ext)}
                if labeled:
                    sample["cls"] = str(i).encode()
                sink.write(sample)
        idx = f"{name}-{s:06d}.idx"
        with open(os.path.join(directory, idx), "w") as f:
            f.write(index_text(members_of_tar(path)))
        shards.append({"file": file, "index_file": idx, "samples": count,
                       "bytes": os.path.getsize(path), "sha256": ""})
        paths.append(path)
    write_test_manifest(directory, name, shards, labeled, fmt, sum(counts))
    return paths


def write_test_manifest(directory: str, name: str, shards: list[dict], labeled: bool = True,
                        fmt: str = "jpg", classes: int | None = None) -> None:
    """manifest.json for ``shards`` (their entries: file, index_file, samples, bytes, sha256),
    one class per sample index unless ``classes`` says how many."""
    total = sum(int(s["samples"]) for s in shards)
    classes = total if classes is None else classes
    write_manifest(directory, {
        "format": "sslpipe-shards", "version": 1, "name": name, "source": "test", "root": "",
        "split": "train", "classes": [str(i) for i in range(classes)], "labeled": labeled,
        "num_samples": total, "image_format": fmt, "resize": None, "quality": 90,
        "subset": None, "counts_per_class": {str(i): 1 for i in range(classes)},
        "shards": shards, "skipped": [], "created_by": "tests",
    })


@contextlib.contextmanager
def encoding_interrupted_at(monkeypatch, count: int) -> Iterator[None]:
    """Within it, `sslpipe shard`'s ``count``-th image encode raises KeyboardInterrupt (a
    Ctrl-C mid-run); the real encoder is back on the way out."""
    import sslpipe.data.encode as encode

    real, calls = encode.encode_record, []

    def dying(record, options):
        calls.append(record.key)
        if len(calls) == count:
            raise KeyboardInterrupt
        return real(record, options)

    monkeypatch.setattr(encode, "encode_record", dying)
    try:
        yield
    finally:
        monkeypatch.setattr(encode, "encode_record", real)
