"""Any class-per-folder image tree (``ROOT/<class>/.../<image>``), as torchvision's ImageFolder.

Classes are the sorted folder names; images are found recursively inside each class folder.
Files with an image extension are records; other files are listed as skipped (never dropped
silently). ``split`` picks ``ROOT/<split>`` when that folder exists. A sample's key is its path
below the root without the extension (``cat/img_1.jpg`` -> ``cat_img_1``); files whose keys
would clash (``photo.jpg`` beside ``photo.png``, ``a/b_c.jpg`` and ``a_b/c.jpg``) keep the
extension, and a hash where needed (:func:`~sslpipe.data.sources.base.unique_keys`).
"""

from __future__ import annotations

import os

from sslpipe.data.sources.base import (
    Record,
    Source,
    check_root,
    layout_error,
    safe_key,
    unique_keys,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")

LAYOUT = """\
ROOT/<class_a>/<image>.jpg       (any depth below the class folder)
ROOT/<class_b>/<image>.png
or, with --split S: ROOT/S/<class>/<image>"""


def read_imagefolder(root: str, split: str = "") -> Source:
    """Read ``ROOT`` (or ``ROOT/<split>``) as a class-per-folder tree.

    Raises:
        ValueError: the root is missing, holds no class folders, or ``split`` is not a folder.
    """
    root = check_root("imagefolder", root, LAYOUT)
    base = root
    if split:
        base = os.path.join(root, split)
        if not os.path.isdir(base):
            raise layout_error("imagefolder", root, f"split folder {split!r} is missing", LAYOUT)
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise layout_error("imagefolder", base, "no class folders", LAYOUT)
    found: list[tuple[str, int, str]] = []  # (path relative to base, label, path)
    skipped = []
    for label, name in enumerate(classes):
        for path in walk_files(os.path.join(base, name)):
            if path.lower().endswith(IMAGE_EXTENSIONS):
                found.append((os.path.relpath(path, base), label, path))
            else:
                skipped.append({"path": path, "reason": "not an image file extension"})
    rels = [rel for rel, _, _ in found]
    keys = unique_keys([safe_key(os.path.splitext(rel)[0]) for rel in rels], rels)
    records = [Record(key, label, path=path) for key, (_, label, path) in zip(keys, found)]
    return Source("imagefolder", root, split or "all", classes, True, records, skipped)


def walk_files(directory: str) -> list[str]:
    """Regular files below ``directory`` (not hidden), sorted, following no symlinked folders."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found)
