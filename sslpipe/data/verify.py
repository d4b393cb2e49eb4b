"""Checking a shard directory against its manifest (``sslpipe shard verify DIR``).

Every shard is checked for: presence, size and sha256 as recorded, the DALI index file matching
the tar, sample count, keys (unique across shards, no dots, one image and, for labeled data,
one ``cls`` per key), class indices in range, per-class totals, and optionally that every image
decodes. Every problem is reported; nothing stops at the first one.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter
from typing import Any

from sslpipe.data.dali_index import index_text, members_of_tar, parse_index
from sslpipe.data.manifest import read_manifest
from sslpipe.data.writer import sha256_of

IMAGE_EXTS = ("jpg", "png")


def verify_shards(directory: str, decode: bool = False) -> list[str]:
    """Problems found in a shard directory (an empty list means it is intact).

    Args:
        directory: a directory written by ``sslpipe shard``.
        decode: also decode every image (slower; catches corrupt image data).

    Raises:
        ValueError: the manifest itself is missing or invalid (see :func:`read_manifest`).
    """
    manifest = read_manifest(directory)
    problems: list[str] = []
    seen: set[str] = set()
    counts: Counter[int] = Counter()
    for shard in manifest["shards"]:
        problems += _check_shard(directory, shard, manifest, seen, counts, decode)
    total = sum(s["samples"] for s in manifest["shards"])
    if total != manifest["num_samples"]:
        problems.append(f"manifest: num_samples is {manifest['num_samples']} but the shards "
                        f"list {total} samples")
    if manifest["labeled"]:
        recorded = {int(k): v for k, v in manifest["counts_per_class"].items()}
        found = {c: counts.get(c, 0) for c in recorded}
        if found != recorded and not any(p.endswith("(not checked)") for p in problems):
            diff = [f"class {c}: {recorded[c]} recorded, {found[c]} found"
                    for c in recorded if recorded[c] != found[c]]
            problems.append("counts_per_class does not match the shards: " + "; ".join(diff[:10]))
    return problems


def _check_shard(directory: str, shard: dict[str, Any], manifest: dict[str, Any],
                 seen: set[str], counts: Counter[int], decode: bool) -> list[str]:
    name, path = shard["file"], os.path.join(directory, shard["file"])
    if not os.path.isfile(path):
        return [f"{name}: missing (not checked)"]
    problems = []
    size = os.path.getsize(path)
    if size != shard["bytes"]:
        problems.append(f"{name}: {size} bytes, manifest says {shard['bytes']}")
    if sha256_of(path) != shard["sha256"]:
        problems.append(f"{name}: sha256 does not match the manifest (file changed or corrupt)")
    try:
        samples = _read_samples(path)
    except (tarfile.TarError, OSError, EOFError) as error:
        return [*problems, f"{name}: not a readable tar: {error}"]
    if len(samples) != shard["samples"]:
        problems.append(f"{name}: {len(samples)} samples, manifest says {shard['samples']}")
    for key, files in samples.items():
        problems += _check_sample(name, key, files, manifest, seen, counts, decode)
    problems += _check_index(directory, shard, path)
    return problems


def _check_sample(shard: str, key: str, files: dict[str, bytes], manifest: dict[str, Any],
                  seen: set[str], counts: Counter[int], decode: bool) -> list[str]:
    problems = []
    if key in seen:
        problems.append(f"{shard}: key {key!r} appears more than once")
    seen.add(key)
    if "." in key:
        problems.append(f"{shard}: key {key!r} contains a dot")
    images = [ext for ext in files if ext in IMAGE_EXTS]
    if len(images) != 1:
        problems.append(f"{shard}: key {key!r} has image files {images}, expected exactly one")
    if manifest["labeled"]:
        problems += _check_label(shard, key, files.get("cls"), len(manifest["classes"]), counts)
    elif "cls" in files:
        problems.append(f"{shard}: key {key!r} has a cls file but the manifest says unlabeled")
    if decode and images:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(files[images[0]])) as image:
                image.load()
        except Exception as error:
            problems.append(f"{shard}: {key}.{images[0]} does not decode: {error}")
    return problems


def _check_label(shard: str, key: str, data: bytes | None, num_classes: int,
                 counts: Counter[int]) -> list[str]:
    if data is None:
        return [f"{shard}: key {key!r} has no cls file"]
    text = data.decode("ascii", "replace").strip()
    if not text.isdigit() or int(text) >= num_classes:
        return [f"{shard}: {key}.cls must be a class index in [0, {num_classes}). Got {text!r}"]
    counts[int(text)] += 1
    return []


def _check_index(directory: str, shard: dict[str, Any], path: str) -> list[str]:
    index_path = os.path.join(directory, shard["index_file"])
    if not os.path.isfile(index_path):
        return [f"{shard['index_file']}: missing DALI index file"]
    with open(index_path, encoding="ascii", errors="replace") as f:
        text = f.read()
    try:
        parse_index(text)
    except ValueError as error:
        return [f"{shard['index_file']}: {error}"]
    if text != index_text(members_of_tar(path)):
        return [f"{shard['index_file']}: does not match the members of {shard['file']}"]
    return []


def _read_samples(path: str) -> dict[str, dict[str, bytes]]:
    from sslpipe.data.dali_index import split_member_name

    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = split_member_name(info.name)
            handle = tar.extractfile(info)
            samples.setdefault(key, {})[ext] = handle.read() if handle else b""
    return samples
