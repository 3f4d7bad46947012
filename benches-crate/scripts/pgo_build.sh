#!/usr/bin/env bash
# Build the gateway optimised with a profile of its own answers (PGO; issue 18, targets 1 and 3).
#
#   benches-crate/scripts/pgo_build.sh [PROFILE]     # default: dist
#   benches-crate/scripts/pgo_build.sh --bare         # the bare proxy, to compare like with like
#
# 1. builds the gateway instrumented (`-Cprofile-generate`) in $CARGO_TARGET_DIR/pgo-generate;
# 2. trains it: gateway_load's throughput, events and latency sections, one short run each, with
#    the instrumented gateway as `--gateway-bin` (JSON and streamed answers, closed loop and one
#    at a time, long answers); each gateway process writes its counts when it exits on SIGTERM;
# 3. merges the counts (`llvm-profdata` of the toolchain's `llvm-tools` component, which matches
#    rustc's LLVM) and rebuilds the gateway with them (`-Cprofile-use`) in
#    $CARGO_TARGET_DIR/pgo-use.
#
# `--target` is passed so that RUSTFLAGS reach the gateway and its libraries, not the build
# scripts and proc macros. The binary is copied to $CARGO_TARGET_DIR/PROFILE/tower-llm-gateway-pgo,
# the merged profile next to it (gateway.profdata). The training drives the paths a healthy
# provider takes; what only failover, retries and the breaker's open state run is laid out as
# cold code (optimised for size). Measured, an answer that fails over still costs 15 % fewer
# instructions than with the plain build: the path it shares with every answer got faster.
#
# --bare does the same to the gateway_load bench, whose `--serve-bare-proxy` is the bare proxy
# (trained by the same sections with the plain gateway; the bench's own client is trained too):
# the binary is $CARGO_TARGET_DIR/pgo-use/HOST/release/deps/gateway_load-*; run gateway_load from
# it, or count its bare proxy with `BENCH_BIN=<it> callgrind_proxy.sh bare ...`.
# Measured in BENCHMARKS.md, "2026-12-07 (session from 22:39 UTC)".
set -euo pipefail
MODE=gateway
if [ "${1:-}" = --bare ]; then MODE=bare; shift; fi
PROFILE=${1:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
[ -x "$PROFDATA" ] || { echo "no $PROFDATA: rustup component add llvm-tools" >&2; exit 2; }
OUT=$CARGO_TARGET_DIR/$PROFILE
RAW=$CARGO_TARGET_DIR/pgo-raw-$MODE
cd "$ROOT"
# The mock and the load generator are ordinary release builds; so is the gateway that trains the
# bare proxy.
cargo build --release -p tower-llm-chaos --bin mock-upstream
cargo bench -p tower-llm-benches --bench gateway_load --no-run
BENCH=$(ls -t "$CARGO_TARGET_DIR"/release/deps/gateway_load-* | grep -v '\.d$' | head -1)
GATEWAY=$OUT/tower-llm-gateway
[ "$MODE" = bare ] && cargo build --profile "$PROFILE" -p tower-llm-gateway --bin tower-llm-gateway

# RUSTFLAGS FLAGS, target directory DIR: build what MODE optimises; print its path.
build() {
  if [ "$MODE" = gateway ]; then
    RUSTFLAGS="${RUSTFLAGS:-} $1" CARGO_TARGET_DIR=$2 cargo build --profile "$PROFILE" \
      --target "$HOST" -p tower-llm-gateway --bin tower-llm-gateway >&2
    echo "$2/$HOST/$PROFILE/tower-llm-gateway"
  else
    RUSTFLAGS="${RUSTFLAGS:-} $1" CARGO_TARGET_DIR=$2 cargo bench --target "$HOST" \
      -p tower-llm-benches --bench gateway_load --no-run >&2
    ls -t "$2/$HOST"/release/deps/gateway_load-* | grep -v '\.d$' | head -1
  fi
}

rm -rf "$RAW"
mkdir -p "$RAW" "$OUT"
GEN=$(build "-Cprofile-generate=$RAW" "$CARGO_TARGET_DIR/pgo-generate")
if [ "$MODE" = gateway ]; then GATEWAY=$GEN; else BENCH=$GEN; fi
# %p: one file per process (the bench starts several); %m: per binary.
LLVM_PROFILE_FILE="$RAW/%p-%m.profraw" "$BENCH" --bench \
  --sections throughput,events,latency --runs 1 --secs 2 --paced-streams 20 \
  --json-requests 300 --gateway-bin "$GATEWAY" --mock-bin "$CARGO_TARGET_DIR/release/mock-upstream" \
  > "$RAW/training.md"
ls "$RAW"/*.profraw > /dev/null 2>&1 || { echo "the training wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$OUT/$MODE.profdata" "$RAW"/*.profraw

USE=$(build "-Cprofile-use=$OUT/$MODE.profdata" "$CARGO_TARGET_DIR/pgo-use")
if [ "$MODE" = gateway ]; then
  cp "$USE" "$OUT/tower-llm-gateway-pgo"
  USE=$OUT/tower-llm-gateway-pgo
fi
echo "optimised with its profile: $USE"
