#!/usr/bin/env bash
# Builds the binary the device check carries: tokenmill without MPI (the device machine has no
# Open MPI) and with NCCL (loaded at run time; the check's part 7 runs it on one rank), optimised (`--profile perf`), stripped and gzipped (the carried tree is limited to
# 64 MiB: 142 MB stripped, ~35 MB gzipped) into tests/device/bin/ (ignored by git; pass it in
# the device tool's `carry`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenmill/target}"
cargo build --profile perf -p tokenmill-cli --no-default-features --features nccl
mkdir -p tests/device/bin
strip -o tests/device/bin/tokenmill "$CARGO_TARGET_DIR/perf/tokenmill"
ldd tests/device/bin/tokenmill
gzip -9 -f tests/device/bin/tokenmill
ls -la tests/device/bin/
