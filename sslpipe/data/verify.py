"""Checking a shard directory against its manifest (``sslpipe shard verify DIR``).

Every shard is checked for: presence, size and sha256 as recorded, the DALI index file matching
the tar, sample count, keys (unique across shards, no dots, one image and, for labeled data,
one ``cls`` per key), class indices in range, per-class totals, and optionally that every image
decodes, under the loader's decode policy (:mod:`sslpipe.ops.images`). Every problem is
reported; nothing stops at the first one.

An image that decodes only past damage libjpeg-turbo reports (``"Corrupt JPEG data: 272
extraneous bytes before marker 0xd9"``; PIL decodes it in silence) is damaged: a problem unless
the manifest records it under ``damaged`` (``sslpipe shard --damaged use`` wrote it knowingly),
and listed either way.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sslpipe.data.dali_index import index_text, members_of_tar, parse_index
from sslpipe.data.manifest import read_manifest
from sslpipe.data.writer import sha256_of

IMAGE_EXTS = ("jpg", "png")


def verify_shards(directory: str, decode: bool = False) -> list[str]:
    """Problems found in a shard directory (an empty list means it is intact).

    Args:
        directory: a directory written by ``sslpipe shard``.
        decode: also decode every image (slower; catches corrupt and damaged image data).

    Raises:
        ValueError: the manifest itself is missing or invalid (see :func:`read_manifest`).
    """
    return verify_report(directory, decode).problems


def verify_report(directory: str, decode: bool = False) -> Verification:
    """:func:`verify_shards`, with the damaged images besides the problems."""
    manifest = read_manifest(directory)
    report = Verification()
    problems = report.problems
    tally = _Tally(decode, {d["key"] for d in manifest.get("damaged", [])}, report.damaged)
    for shard in manifest["shards"]:
        problems += _check_shard(directory, shard, manifest, tally)
    counts = tally.counts
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
    return report


@dataclass(frozen=True)
class DamagedImage:
    """An image of a shard that decodes only past damage libjpeg-turbo reports."""

    shard: str
    key: str
    ext: str
    why: str
    recorded: bool  # the manifest lists it under ``damaged``

    def __str__(self) -> str:
        return f"{self.shard}: {self.key}.{self.ext} is damaged: {self.why}"


@dataclass
class Verification:
    """What :func:`verify_report` found.

    Attributes:
        problems: one line per problem (none: intact); a damaged image the manifest does not
            record is one.
        damaged: every damaged image found (``decode=True``), recorded or not.
    """

    problems: list[str] = field(default_factory=list)
    damaged: list[DamagedImage] = field(default_factory=list)


@dataclass
class _Tally:
    """What the checks of one directory share: keys seen, labels counted, damage found."""

    decode: bool
    recorded: set[str]  # keys the manifest lists as damaged
    damaged: list[DamagedImage]
    seen: set[str] = field(default_factory=set)
    counts: Counter[int] = field(default_factory=Counter)


def _check_shard(directory: str, shard: dict[str, Any], manifest: dict[str, Any],
                 tally: _Tally) -> list[str]:
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
        problems += _check_sample(name, key, files, manifest, tally)
    problems += _check_index(directory, shard, path)
    return problems


def _check_sample(shard: str, key: str, files: dict[str, bytes], manifest: dict[str, Any],
                  tally: _Tally) -> list[str]:
    problems = []
    if key in tally.seen:
        problems.append(f"{shard}: key {key!r} appears more than once")
    tally.seen.add(key)
    if "." in key:
        problems.append(f"{shard}: key {key!r} contains a dot")
    images = [ext for ext in files if ext in IMAGE_EXTS]
    if len(images) != 1:
        problems.append(f"{shard}: key {key!r} has image files {images}, expected exactly one")
    if manifest["labeled"]:
        problems += _check_label(shard, key, files.get("cls"), len(manifest["classes"]),
                                 tally.counts)
    elif "cls" in files:
        problems.append(f"{shard}: key {key!r} has a cls file but the manifest says unlabeled")
    if tally.decode and images:
        problems += _check_decode(shard, key, images[0], files[images[0]], tally)
    return problems


def _check_decode(shard: str, key: str, ext: str, data: bytes, tally: _Tally) -> list[str]:
    """Decode as the loader does: a failure is a problem, damage one unless recorded."""
    from sslpipe.ops.decoding import DamagedImageWarning, decode

    name = f"{key}.{ext}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedImageWarning)
            decode(data, where=name)
    except ValueError as error:
        why = str(error)
        return [f"{shard}: {name} does not decode: "
                f"{why[len(name) + 2:] if why.startswith(name + ': ') else why}"]
    whys = [w.message.why for w in caught if isinstance(w.message, DamagedImageWarning)]
    if not whys:
        return []
    found = DamagedImage(shard, key, ext, whys[0], key in tally.recorded)
    tally.damaged.append(found)
    if found.recorded:
        return []
    return [f"{found} (it decodes only past the damage, which the manifest does not record)"]


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
