#!/usr/bin/env bash
# make fuzz: runs each fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for
# FUZZ_SECONDS (default 180) from the corpus kept in fuzz/corpus/, then
# merges into that corpus the inputs that reached new code (commit them).
# A crash, a hang (-timeout) or an allocation above -malloc_limit_mb stops
# the run with the input saved under fuzz/artifacts/<target>/.
#
#   make fuzz                          every target, 3 minutes each
#   FUZZ_TARGETS=pgoutput FUZZ_SECONDS=600 make fuzz
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SYNCLINE_CACHE:-$HOME/.cache/syncline}
export PATH="$CACHE/cargo-fuzz/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into $CACHE/cargo-fuzz"
  cargo install cargo-fuzz --locked --root "$CACHE/cargo-fuzz"
fi
# cargo-fuzz passes flags of a nightly compiler; the project's toolchain is
# stable (1.95), which accepts them with RUSTC_BOOTSTRAP. No sanitizer
# (`-s none`): the code under test is safe Rust, and libFuzzer's own
# malloc, RSS and time limits are what the targets assert.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$CACHE/fuzz-target"
SECONDS_EACH=${FUZZ_SECONDS:-180}
for t in ${FUZZ_TARGETS:-record_decode pgoutput pipeline_load}; do
  work="$CACHE/fuzz-corpus/$t"
  mkdir -p "$work" "fuzz/corpus/$t"
  echo "fuzz: $t for ${SECONDS_EACH}s"
  cargo fuzz run --fuzz-dir fuzz -s none "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -max_len=65536 -print_final_stats=1
  cargo fuzz run --fuzz-dir fuzz -s none "$t" -- -set_cover_merge=1 "fuzz/corpus/$t" "$work" 2>&1 | tail -2
done
echo "fuzz: no crash, no hang, no allocation beyond the limits"
