# What the device scripts share (sourced by check.sh and sanitize.sh from the repository root):
# the carried binary unpacked into $BIN (unless BIN names one), and the CUDA libraries it loads
# found — NVRTC, cuBLAS and cuBLASLt of the CUDA toolkit or of the nvidia-* wheels PyTorch
# brings, NCCL under the name cudarc opens — on LD_LIBRARY_PATH and in TOKENMILL_CUDA_LIB.
# Without the binary or a library it needs, it ends the script that sourced it (exit 2).
BIN="${BIN:-}"
if [ -z "$BIN" ]; then
  BIN="${TMPDIR:-/tmp}/tokenmill-device-check"
  gunzip -c tests/device/bin/tokenmill.gz > "$BIN" && chmod +x "$BIN" || {
    echo "no binary: run tests/device/prepare.sh here and carry tests/device/bin"; exit 2; }
fi
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
dirs="${dirs#:}"
LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+${dirs:+:}$LD_LIBRARY_PATH}"
if [ -n "$LD_LIBRARY_PATH" ]; then export LD_LIBRARY_PATH; else unset LD_LIBRARY_PATH; fi
echo "CUDA library directories: ${LD_LIBRARY_PATH:-none}"
for d in ${dirs//:/ }; do ls "$d" | grep -E 'nvrtc|cublas' | tr '\n' ' '; echo; done
# NCCL for part 7: cudarc opens libnccl.so by that name, and the NCCL wheels ship only
# libnccl.so.2, so a directory of our own links it under the name looked for.
nccl=$(find /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 \
  $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
  -maxdepth 5 -name 'libnccl.so*' 2>/dev/null | sort | head -1)
if [ -n "$nccl" ]; then
  NCCL_LINK="${TMPDIR:-/tmp}/tokenmill-nccl"; mkdir -p "$NCCL_LINK"; ln -sf "$nccl" "$NCCL_LINK/libnccl.so"
  export LD_LIBRARY_PATH="$NCCL_LINK${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; echo "NCCL: $nccl"
else
  echo "NCCL: not found (part 7 reports it)"
fi
# Our bindings are CUDA 13's; a directory with the .so.13 libraries is preloaded by path.
for d in ${dirs//:/ }; do [ -e "$d/libnvrtc.so.13" ] && export TOKENMILL_CUDA_LIB="$d"; done
