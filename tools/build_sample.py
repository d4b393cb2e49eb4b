"""Build the embedded FashionMNIST sample in ``sslpipe/assets/fashion_mnist_sample/``.

    python tools/build_sample.py [--root /usr/share/datasets/fashion-mnist]

train: 4,000 images (400 per class), test: 1,000 images (100 per class), both class-balanced
subsets drawn with seed 0, written as 28 x 28 grayscale PNG shards of 2,000 samples with a
manifest and DALI index files per split. The output is deterministic: rebuilding gives the
same bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil

from sslpipe.data import EncodeOptions, ShardOptions, open_source, write_shards

SIZES = {"train": 4000, "test": 1000}
OUT = os.path.join(os.path.dirname(__file__), "..", "sslpipe", "assets", "fashion_mnist_sample")


def build(root: str, out: str = OUT) -> None:
    """Write both splits of the sample under ``out`` (replacing what is there)."""
    for split, size in SIZES.items():
        directory = os.path.join(out, split)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        source = open_source("fashion-mnist", root, split)
        options = ShardOptions(
            name=f"fashion_mnist_{split}", subset=str(size), seed=0,
            encode=EncodeOptions(image_format="png"), shard_size=2000, shard_bytes=None,
            progress=False,
        )
        manifest = write_shards(source, directory, options)
        print(f"{split}: {manifest['num_samples']} images, {len(manifest['shards'])} shard(s), "
              f"counts {manifest['counts_per_class']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist",
                        help="directory holding the FashionMNIST IDX files (.gz or not)")
    parser.add_argument("--out", default=OUT, help="output directory")
    args = parser.parse_args()
    build(args.root, args.out)


if __name__ == "__main__":
    main()
