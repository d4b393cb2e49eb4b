"""The embedded FashionMNIST sample that ships inside the package (``sslpipe/assets/``).

4,000 training images (400 per class) and 1,000 test images (100 per class), 28 x 28
grayscale PNG in WebDataset shards, built by ``tools/build_sample.py``. ``sslpipe quickstart``
and the tests train and evaluate on it without any download.
"""

from __future__ import annotations

import os

SAMPLE_SPLITS = ("train", "test")


def sample_path(split: str = "train") -> str:
    """Directory of the embedded sample's shards for ``split`` (``"train"`` or ``"test"``).

    The path is resolved from the installed package, so it works from any working directory.

    Raises:
        ValueError: an unknown split, or the sample is missing from this installation.
    """
    if split not in SAMPLE_SPLITS:
        raise ValueError(f"`split` must be one of {list(SAMPLE_SPLITS)}. Got {split!r}")
    import sslpipe.assets

    path = os.path.join(os.path.dirname(sslpipe.assets.__file__), "fashion_mnist_sample", split)
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        raise ValueError(
            f"the embedded sample is missing: expected {path!r} with manifest.json "
            "(rebuild it with `python tools/build_sample.py`)"
        )
    return path
