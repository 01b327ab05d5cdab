#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with libFuzzer's coverage guidance, on the
# stable toolchain: the coverage instrumentation (-C passes=sancov-module and its llvm-args)
# is stable; only the sanitizers need nightly, and Rust code needs none to find panics.
# Seeds come from fuzz/corpus/<target> (captured firmware packets, real requests); what
# libFuzzer adds goes to target/fuzz-corpus/<target>, crashes to target/fuzz-artifacts/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(tftp_packet tftp_transfer dhcp_request dhcp_reply http_boot)
fi
triple=$(rustc -vV | awk '/^host:/ { print $2 }')
# --target keeps the flags off build scripts and proc macros, which run on this machine.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --manifest-path fuzz/Cargo.toml --release --locked --quiet \
  --target "$triple" --target-dir target/fuzz
mkdir -p target/fuzz-artifacts
for target in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  # -rss_limit_mb: a target that grows memory without bound is a finding too.
  if ! "target/fuzz/$triple/release/$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="target/fuzz-artifacts/$target-" \
      "target/fuzz-corpus/$target" "fuzz/corpus/$target" 2>"target/fuzz-artifacts/$target.log"; then
    tail -n 60 "target/fuzz-artifacts/$target.log" >&2
    echo "fuzz target $target failed; the input is in target/fuzz-artifacts/ (replay: target/fuzz/$triple/release/$target FILE)" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units|^Done" "target/fuzz-artifacts/$target.log" | tr '\n' ' '
  echo
done
