#!/usr/bin/env bash
# Fuzz campaigns with AFL++ on the stable toolchain (cargo afl), not part of CI.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 600 s, every target)
#
# Builds the instrumented binary (its own target directory), writes the seed corpora from
# ../shared/data, runs each target for the given time (JOBS of them at once, default 1), then
# prints a table of executions, corpus sizes, coverage, crashes and hangs, and minimises each
# queue and keeps 40 of its entries (at most 8 KiB each, spread over the sizes) in
# fuzz/corpus/<target>/, the inputs the replay test runs in CI (seeds, which are cut from the
# shared real files, are left out: CI rebuilds them). Crashes stay in
# $WORK/<target>/default/crashes/: replay one with `tokenmill-fuzz run TARGET FILE`, fix it,
# and keep the file under fuzz/regressions/<target>/.
#
# Needs: cargo install cargo-afl && cargo afl config --build (once).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-600}
shift || true
JOBS=${JOBS:-1}
WORK=${WORK:-${TMPDIR:-/tmp}/tokenmill-fuzz-campaign}
AFL_TARGET_DIR=${AFL_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-afl}
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_AUTORESUME=1
export AFL_NO_AFFINITY=1

CARGO_TARGET_DIR=$AFL_TARGET_DIR cargo afl build -p tokenmill-fuzz --no-default-features \
    --features afl --bin tokenmill-fuzz-afl
BIN=$AFL_TARGET_DIR/debug/tokenmill-fuzz-afl
cargo run -q -p tokenmill-fuzz --bin tokenmill-fuzz -- seeds "$WORK/seeds"

if [ $# -gt 0 ]; then TARGETS=("$@"); else
    mapfile -t TARGETS < <(cargo run -q -p tokenmill-fuzz --bin tokenmill-fuzz -- list | awk '{print $1}')
fi

campaign() {
    local t=$1
    # -m: a memory limit (MB) so an allocation sized by a hostile header is a crash, not a
    # swap storm; -t: 5 s per input, beyond which the input is a hang.
    cargo afl fuzz -i "$WORK/seeds/$t" -o "$WORK/$t" -m 4096 -t 5000 -V "$SECONDS_PER_TARGET" \
        -- "$BIN" "$t" > "$WORK/$t.log" 2>&1 || echo "$t: afl-fuzz exited $? (see $WORK/$t.log)"
}

running=0
for t in "${TARGETS[@]}"; do
    campaign "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

stat() { awk -F' *: *' -v k="$2" '$1 == k {print $2}' "$WORK/$1/default/fuzzer_stats"; }
printf '| target | seconds | executions | execs/s | corpus | edges | crashes | hangs |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for t in "${TARGETS[@]}"; do
    [ -f "$WORK/$t/default/fuzzer_stats" ] || { echo "| $t | no stats (see $WORK/$t.log) |"; continue; }
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(stat "$t" run_time)" \
        "$(stat "$t" execs_done)" "$(stat "$t" execs_per_sec)" "$(stat "$t" corpus_count)" \
        "$(stat "$t" edges_found)" "$(stat "$t" saved_crashes)" "$(stat "$t" saved_hangs)"
done

for t in "${TARGETS[@]}"; do
    q=$WORK/$t/default/queue
    [ -d "$q" ] || continue
    rm -rf "$WORK/$t.cmin"
    cargo afl cmin -i "$q" -o "$WORK/$t.cmin" -m 4096 -t 5000 -- "$BIN" "$t" > /dev/null 2>&1 ||
        cp -r "$q" "$WORK/$t.cmin"
    mkdir -p "fuzz/corpus/$t"
    find "fuzz/corpus/$t" -type f ! -name README.md -delete
    # Kept in the repository: mutants only (the seeds, cut from ../shared/data, are rebuilt),
    # at most 8 KiB each, 40 spread evenly over the sizes of the minimised queue, named
    # without ':' or ','.
    find "$WORK/$t.cmin" -maxdepth 1 -type f -name 'id*' ! -name '*orig:*' -size -8193c \
        -printf '%s %p\n' | sort -n | awk '{print $2}' > "$WORK/$t.sizes"
    n=$(wc -l < "$WORK/$t.sizes")
    awk -v n="$n" 'BEGIN {k = n < 40 ? n : 40} int((NR - 1) * k / n) != int(NR * k / n)' \
        "$WORK/$t.sizes" | while read -r f; do
        cp "$f" "fuzz/corpus/$t/$(basename "$f" | cut -c1-9 | tr ':,' '-_')"
    done
    echo "$t: $(find "fuzz/corpus/$t" -type f | wc -l) corpus entries kept"
done
