#!/usr/bin/env bash
# Prepare, on this machine, what the lent GPU machine needs to run tools/device_check.sh:
# the shared device-wheels (kornia, webdataset, click, ...) plus the wheels sslpipe itself needs
# that the GPU image lacks (simplejpeg), for Python 3.12 x86-64, in .whl/; with --dali also
# NVIDIA DALI and nvImageCodec, unpacked, xz-compressed and split into chunks .dxz0, .dxz1, ...
# small enough to travel with .whl and the working tree (one call carries at most 64 MiB).
#
#   tools/device_prepare.sh [--dali]
#
# Without --dali: one device `run`, carry [".whl"], command "bash tools/device_check.sh".
# With --dali: one call per chunk, back to back (the machine stays warm about 30 s; /tmp
# survives while it is warm): call k carries [".whl", ".dxzK"]; every call but the last runs
# "bash tools/device_check.sh chunk" (or cheap parts), the last "bash tools/device_check.sh",
# which unpacks DALI and runs every part.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
../shared/tools/device-wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl simplejpeg 2> >(grep -v 'is ignored' >&2)
echo "carry: .whl ($(du -sh .whl | cut -f1))"
[ "${1:-}" = "--dali" ] || exit 0
ex=$(git rev-parse --git-path info/exclude)
grep -qxF '/.dxz*/' "$ex" 2>/dev/null || echo '/.dxz*/' >> "$ex"
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$tmp/whl" \
  nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 nvidia-libnvcomp-cu13 nvidia-nvjpeg \
  astunparse gast==0.6.0 libcst makefun nvtx optree dm-tree six 2> >(grep -v 'is ignored' >&2)
mkdir -p "$tmp/site"
for w in "$tmp"/whl/*.whl; do unzip -q -o "$w" -d "$tmp/site"; done  # what pip --target does
tar -C "$tmp" -cf - site | xz -T0 -6 > "$tmp/site.tar.xz"
rm -rf .dxz*
split -b 38m -d -a 1 "$tmp/site.tar.xz" "$tmp/chunk"
n=0
for f in "$tmp"/chunk*; do mkdir -p ".dxz$n"; mv "$f" ".dxz$n/part"; n=$((n+1)); done
touch ".dxz$((n-1))/last"
rm -rf "$tmp"
echo "DALI + nvImageCodec: $n chunks .dxz0 .. .dxz$((n-1)) ($(du -shc .dxz* | tail -1 | cut -f1))"
