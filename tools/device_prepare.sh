#!/usr/bin/env bash
# Prepare, on this machine, what the lent GPU machine needs to run tools/device_check.sh:
# the shared device-wheels (kornia, webdataset, click, ...; --dali adds DALI in chunks) plus the
# wheels sslpipe itself needs that the GPU image lacks (simplejpeg), for Python 3.12 x86-64.
#
#   tools/device_prepare.sh [--dali]
#
# Then one device `run`: carry [".whl"], command "bash tools/device_check.sh", timeout_s 560.
# With --dali, first make the DALI chunk calls that ../shared/tools/device-wheels prints, back
# to back, each carrying [".whl", ".daliK"] and running "source .whl/setup.sh"; the last one
# may run "source .whl/setup.sh && bash tools/device_check.sh" in the same call.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
../shared/tools/device-wheels "$@"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl simplejpeg 2> >(grep -v 'is ignored' >&2)
echo "carry: .whl ($(du -sh .whl | cut -f1))"
