"""Any class-per-folder image tree (``ROOT/<class>/.../<image>``), as torchvision's ImageFolder.

Classes are the sorted folder names; images are found recursively inside each class folder.
Files with an image extension are records; other files are listed as skipped (never dropped
silently). ``split`` picks ``ROOT/<split>`` when that folder exists.
"""

from __future__ import annotations

import os

from sslpipe.data.sources.base import Record, Source, check_root, layout_error, safe_key

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
    records, skipped = [], []
    for label, name in enumerate(classes):
        for path in walk_files(os.path.join(base, name)):
            rel = os.path.relpath(path, base)
            if path.lower().endswith(IMAGE_EXTENSIONS):
                records.append(Record(safe_key(os.path.splitext(rel)[0]), label, path=path))
            else:
                skipped.append({"path": path, "reason": "not an image file extension"})
    return Source("imagefolder", root, split or "all", classes, True, records, skipped)


def walk_files(directory: str) -> list[str]:
    """Regular files below ``directory`` (not hidden), sorted, following no symlinked folders."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found)
