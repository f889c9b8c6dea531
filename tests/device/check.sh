#!/usr/bin/env bash
# The device check, for a lent GPU machine (one H200, no Rust toolchain, no network). Prepare
# here with tests/device/prepare.sh (builds a stripped tokenmill into tests/device/bin/), then
# run on the device from the repository root, carrying tests/device/bin:
#
#   bash tests/device/check.sh            # writes $OUT (or a temporary directory)
#
# In order, within ~8 minutes: the machine and its CUDA libraries; `tokenmill doctor --gpu`
# (every CUDA kernel against the CPU reference in the same binary, GEMM TFLOPS — FP32/BF16
# cuBLAS, FP8 cuBLASLt with 1×128/128×128 scaling, our FP8 and grouped expert GEMMs —, the
# `small` preset trained on GPU and CPU in fp32/bf16/fp8 and the loss curves compared); then the
# same model through transformers' DeepseekV3ForCausalLM with PyTorch on the same GPU as the
# throughput anchor. Figures go to $OUT/gpu.json, $OUT/doctor.txt and $OUT/torch-*.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
STEPS="${STEPS:-30}"
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
BIN="${BIN:-}"
if [ -z "$BIN" ]; then
  BIN="${TMPDIR:-/tmp}/tokenmill-device-check"
  gunzip -c tests/device/bin/tokenmill.gz > "$BIN" && chmod +x "$BIN" || {
    echo "no binary: run tests/device/prepare.sh here and carry tests/device/bin"; exit 2; }
fi
echo "== $(date -u +%FT%TZ) machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
nproc; free -g | head -2
test -x "$BIN" || { echo "no binary at $BIN: run tests/device/prepare.sh here and carry tests/device/bin"; exit 2; }
if ldd "$BIN" | grep -q "not found"; then echo "missing shared libraries:"; ldd "$BIN" | grep "not found"; exit 2; fi

# NVRTC, cuBLAS and cuBLASLt: the CUDA toolkit's, or the nvidia-* wheels PyTorch brings.
dirs=""
for root in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
  [ -d "$root" ] || continue
  for f in $(find "$root" -maxdepth 5 \( -name 'libnvrtc.so.*' -o -name 'libcublas.so.*' -o -name 'libcublasLt.so.*' -o -name 'libnvrtc-builtins.so.*' \) 2>/dev/null); do
    d=$(dirname "$f"); case ":$dirs:" in *":$d:"*) ;; *) dirs="$dirs:$d" ;; esac
  done
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "CUDA library directories: ${LD_LIBRARY_PATH:-none}"
for d in ${dirs//:/ }; do ls "$d" | grep -E 'nvrtc|cublas' | tr '\n' ' '; echo; done
# Our bindings are CUDA 13's; a directory with the .so.13 libraries is preloaded by path.
for d in ${dirs//:/ }; do [ -e "$d/libnvrtc.so.13" ] && export TOKENMILL_CUDA_LIB="$d"; done

echo "== tokenmill doctor --gpu"
timeout 420 "$BIN" doctor --gpu --json "$OUT/gpu.json" --out "${TMPDIR:-/tmp}/tokenmill-doctor" --train-steps "$STEPS" \
  | tee "$OUT/doctor.txt"
echo "doctor exit: ${PIPESTATUS[0]}"

echo "== transformers DeepseekV3ForCausalLM + PyTorch on the same GPU (anchor)"
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
  HF="${TMPDIR:-/tmp}/tokenmill-small-hf"
  "$BIN" model init --preset small --out "$HF" >/dev/null
  # The doctor's runs use the generated dataset's 4096-token vocabulary.
  python3 - "$HF/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["vocab_size"] = 4096; json.dump(c, open(p, "w"))
PY
  for dt in fp32 bf16; do
    timeout 120 python3 tests/peers/bench_torch_train.py --dir "$HF" --batch 8 --seq 256 \
      --steps 20 --threads "$(nproc)" --device cuda --dtype "$dt" | tee "$OUT/torch-$dt.json"
  done
else
  echo "no PyTorch with CUDA here: anchor skipped"
fi
echo "== done: $OUT"
