#!/usr/bin/env bash
# The device check, for a lent GPU machine (one H100 or H200, no Rust toolchain, no network). Prepare
# here with tests/device/prepare.sh (builds a stripped tokenmill into tests/device/bin/), then
# run on the device from the repository root, carrying tests/device/bin:
#
#   bash tests/device/check.sh            # writes $OUT (or a temporary directory)
#
# In order, within ~8 minutes: the machine and its CUDA libraries; `tokenmill doctor --gpu`
# (every CUDA kernel against the CPU reference in the same binary, GEMM TFLOPS — FP32/BF16
# cuBLAS, FP8 cuBLASLt with 1×128/128×128 scaling, our FP8 and grouped expert GEMMs on the CUDA
# and the tensor cores —, the optimizer's AdamW and sums of squares beside a device-to-device
# copy, the
# `small` preset trained on GPU and CPU in fp32/bf16/fp8 (and fp8 with cuBLASLt's GEMMs, with
# our tensor-core kernel's — wgmma on TMA copies on the H200 —, and with the two split between dense and
# experts) and
# the loss curves compared, the
# training throughput of the `small` and `1b` presets on the GPU, the same in CUDA managed memory
# and, with HMM, on host memory, and the NCCL communicator's conformance checks on one rank); then the same models through
# transformers' DeepseekV3ForCausalLM with PyTorch on the same GPU as the throughput anchor.
# Figures go to $OUT/gpu.json (written after each part), $OUT/doctor.txt and
# $OUT/torch-<preset>-<dtype>.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
STEPS="${STEPS:-30}"
SPEED_PRESETS="${SPEED_PRESETS:-small,1b}"
# fp8-cublaslt, fp8-mma and fp8-cublaslt+mma (fp8 with its FP8 GEMMs on cuBLASLt, on our
# kernel (wgmma on TMA copies on Hopper; TOKENMILL_CUDA_MMA=multicast for the same in clusters
# of two multicasting A, =wgmma for wgmma on cp.async copies,
# =sync for mma.sync), or the dense ones on the
# first and the experts' on the second) fit a second
# run: SPEED_PRECISIONS=fp8-cublaslt,fp8-mma,fp8-cublaslt+mma STEPS=0.
SPEED_PRECISIONS="${SPEED_PRECISIONS:-fp32,bf16}"
SPEED_BATCH="${SPEED_BATCH:-8}"
SPEED_SEQ="${SPEED_SEQ:-512}"
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
echo "== $(date -u +%FT%TZ) machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
nproc; free -g | head -2
. tests/device/env.sh

echo "== tokenmill doctor --gpu"
# No part or training run starts after 400 s (--budget-s), so that the last one started ends
# inside the 480 s and the report lists what was left out rather than losing its last parts.
timeout 480 "$BIN" doctor --gpu --budget-s "${BUDGET_S:-400}" --json "$OUT/gpu.json" --out "${TMPDIR:-/tmp}/tokenmill-doctor" --train-steps "$STEPS" \
  --speed-presets "$SPEED_PRESETS" --speed-precisions "$SPEED_PRECISIONS" \
  --speed-batch "$SPEED_BATCH" --speed-seq "$SPEED_SEQ" \
  | tee "$OUT/doctor.txt"
echo "doctor exit: ${PIPESTATUS[0]}"

echo "== transformers DeepseekV3ForCausalLM + PyTorch on the same GPU (anchor of part 4)"
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
  # The same presets, batch and sequence length as the doctor's part 4, at the presets' own
  # vocabulary; transformers builds no MTP module, and part 4 trains none.
  for preset in ${SPEED_PRESETS//,/ }; do
    HF="${TMPDIR:-/tmp}/tokenmill-$preset-hf"
    "$BIN" model init --preset "$preset" --config-only --out "$HF" >/dev/null
    for dt in fp32 bf16; do
      # The whole check stays under the device tool's 600 s a command: each anchor gets at
      # most 90 s of what is left before 570 s.
      left=$(( 570 - SECONDS )); [ "$left" -gt 90 ] && left=90
      if [ "$left" -lt 20 ]; then echo "anchor $preset $dt skipped: out of time"; continue; fi
      timeout "$left" python3 tests/peers/bench_torch_train.py --dir "$HF" --batch "$SPEED_BATCH" \
        --seq "$SPEED_SEQ" --steps 10 --threads "$(nproc)" --device cuda --dtype "$dt" \
        | tee "$OUT/torch-$preset-$dt.json"
    done
  done
else
  echo "no PyTorch with CUDA here: anchor skipped"
fi
echo "== done: $OUT"
