#!/usr/bin/env bash
# Every check that needs a GPU, in one run on the lent machine (see device_prepare.sh): the
# gpu-marked tests (device stages on CUDA against the CPU, no host sync in a training step,
# the decode policy's corpus on the nvjpeg and dali backends, the GPU JPEG decoders), the JPEG
# decoders' agreement and speed, the input-pipeline benchmark (SimCLR two views and rotation
# at 224 px, every path, uint8 host batches on the cpu backend), the ResNet-50 SimCLR step fed
# against synthetic input, and the trainer step against a plain loop with its host syncs per
# step. ragged_crop (loop vs nested padding) runs when named. Each part has its own time
# limit so one slow part cannot eat the others; logs go to $OUT (or ./device-out).
#
#   bash tools/device_check.sh [chunk | PART...]
#   PATHS=sslpipe BACKEND=nvjpeg bash tools/device_check.sh input_pipeline train_step
#   PROFILE=1 bash tools/device_check.sh gpu_stages      # with torch.profiler's top operators
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -f .whl/setup.sh ] && source .whl/setup.sh
# DALI and nvImageCodec travel as xz chunks (tools/device_prepare.sh --dali), one per call:
# each call appends its chunk; the call with the last one unpacks them into /tmp/site.
for c in .dxz*; do
  [ -f "$c/part" ] || continue
  cat "$c/part" >> /tmp/dali.tar.xz && echo "appended $c ($(du -h /tmp/dali.tar.xz | cut -f1))"
  if [ -f "$c/last" ]; then
    tar -xJf /tmp/dali.tar.xz -C /tmp && rm -f /tmp/dali.tar.xz && echo "DALI unpacked into /tmp/site"
  fi
done
[ "${1:-}" = "chunk" ] && exit 0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
  python3 -c "import nvidia.dali as d; print('dali', d.__version__)" 2>/dev/null || echo "dali: not installed"
  nproc; } 2>&1 | tee "$out/machine.txt"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$out/$name.log"
}
# Parts, all by default; name some to run only those (tools/device_check.sh gpu_tests ragged_crop),
# e.g. to spread the work over the back-to-back calls that carry DALI's chunks.
parts=${*:-gpu_tests jpeg_decoders gpu_stages input_pipeline train_step}
for part in $parts; do
  case $part in
    gpu_tests) step gpu_tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests ;;
    dali_tests) step dali_tests 90 python3 -m pytest -q -p no:cacheprovider -m "gpu and dali" -rs \
      tests ;;  # the DALI share of gpu_tests, for a call made once DALI is installed
    gpu_stages) step gpu_stages 90 python3 benchmarks/gpu_stages.py --device cuda --images 2048 \
      --batch 256 --workers "$(nproc)" ${PROFILE:+--profile} ;;
    input_pipeline) step input_pipeline 170 python3 benchmarks/input_pipeline.py --images 2048 \
      --batch 256 --device cuda --cores "$(nproc)" --paths "${PATHS:-torchvision,kornia,dali-native,sslpipe}" ;;
    train_step) step train_step 150 python3 benchmarks/train_step.py --device cuda --arch resnet50 \
      --task simclr --size 224 --batch 256 --images 2048 --workers "$(nproc)" --amp \
      --backend "${BACKEND:-auto}" ;;
    jpeg_decoders) step jpeg_decoders 60 python3 benchmarks/jpeg_decoders.py --device cuda \
      --images 2048 --batch 256 ;;
    ragged_crop) step ragged_crop 30 python3 benchmarks/ragged_crop.py --device cuda --batch 256 \
      --iters 20 ;;
    *) echo "unknown part: $part (gpu_tests dali_tests jpeg_decoders gpu_stages input_pipeline train_step ragged_crop)"; exit 2 ;;
  esac
done
