#!/usr/bin/env bash
# Our CUDA kernels under NVIDIA's compute-sanitizer, on a lent GPU (the lent machines have it;
# seen working on the Firecracker H100 and H200): the device check's part 1 — every kernel
# against the CPU reference, our tensor-core kernels' probes and rows included
# (`tokenmill doctor --gpu --kernels-only`) — under each tool of SANITIZE_TOOLS (default
# memcheck: out-of-bounds and misaligned accesses to global, shared and local memory, on the
# hardware; the emulated driver in CI sees a kernel reach past a buffer only past its pages or
# when it writes the rest of its last 256 bytes). Also synccheck (barriers that part of a block
# or warp never reaches) and racecheck (shared-memory hazards), slower. Prepared as check.sh is
# (tests/device/prepare.sh, carrying tests/device/bin); a second command after check.sh when
# ~4 minutes of the lease are left:
#
#   bash tests/device/sanitize.sh            # writes $OUT/sanitize-<tool>.txt and .json
#
# Each tool's run is limited to SANITIZE_S seconds (default 150). Exit status: 0 when every
# tool ran and found nothing, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
TOOLS="${SANITIZE_TOOLS:-memcheck}"
LIMIT="${SANITIZE_S:-150}"
mkdir -p "$OUT"
exec > >(tee "$OUT/sanitize.log") 2>&1
. tests/device/env.sh
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
  /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
[ -n "$SAN" ] || { echo "no compute-sanitizer on PATH or in /usr/local/cuda"; exit 2; }
"$SAN" --version | tail -1
status=0
for tool in ${TOOLS//,/ }; do
  echo "== $(date -u +%FT%TZ) compute-sanitizer --tool $tool: the kernel table"
  t0=$SECONDS
  # --error-exitcode sets the status when the tool reports an error (the doctor's own is 1 for
  # a failed row); the child processes (the wgmma probes) are checked too.
  extra=""; [ "$tool" = memcheck ] && extra="--leak-check no"
  # (-k: a sanitizer that ignores the TERM is killed, so that no run holds the GPU into the next.)
  timeout -k 10 "$LIMIT" "$SAN" --tool "$tool" --target-processes all --print-limit 50 \
    --error-exitcode 3 $extra \
    "$BIN" doctor --gpu --kernels-only --json "$OUT/sanitize-$tool.json" \
    > "$OUT/sanitize-$tool.txt" 2>&1
  rc=$?
  # Each report's first line (its frames follow, indented), counted; then the summaries.
  grep -E "^========= [A-Z]" "$OUT/sanitize-$tool.txt" \
    | grep -vE "^========= (COMPUTE-SANITIZER|ERROR SUMMARY)" | sort | uniq -c | sort -rn | head -40
  grep -E "^========= ERROR SUMMARY" "$OUT/sanitize-$tool.txt"
  tail -3 "$OUT/sanitize-$tool.txt"
  case $rc in
    0) echo "$tool: nothing found ($((SECONDS - t0)) s)" ;;
    3) echo "$tool: errors reported (above; $OUT/sanitize-$tool.txt)"; status=1 ;;
    124) echo "$tool: not finished in $LIMIT s"; status=1 ;;
    *) echo "$tool: exit $rc (a failed row or step: $OUT/sanitize-$tool.txt)"; status=1 ;;
  esac
done
exit $status
