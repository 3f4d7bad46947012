#!/usr/bin/env bash
# Build the gateway with the code one answer runs laid out together (issue 18, target 3).
#
#   benches-crate/scripts/ordered_build.sh [PROFILE]     # default: dist
#
# 1. builds the gateway (and the mock upstream) as usual;
# 2. runs it under callgrind (callgrind_proxy.sh: 10 streamed and 50 JSON answers) and lists the
#    functions those answers ran (hot_symbols.py), per-event ones first;
# 3. relinks the gateway with that list as LLD's `--symbol-ordering-file` (`cargo rustc` on the
#    binary only: the libraries are not rebuilt, so the names in the list are the ones linked).
#
# The binary is $CARGO_TARGET_DIR/PROFILE/tower-llm-gateway, the list next to it
# (hot-symbols.txt). A later plain `cargo build` of the same profile puts its own binary, linked
# without the list, back in that place. Needs valgrind, curl, python3, and LLD as the linker
# (the default of x86_64-unknown-linux-gnu since Rust 1.90). Measured in BENCHMARKS.md, "2026-12-07 (session
# from 20:30 UTC)": the answer's code on 170 pages instead of 341 (`dist`), time to first token
# at concurrency 1 70-80 µs sooner at p50 and 85-100 µs at p99.
set -euo pipefail
PROFILE=${1:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$CARGO_TARGET_DIR/$PROFILE
cd "$ROOT"
cargo build --profile "$PROFILE" -p tower-llm-gateway --bin tower-llm-gateway
# callgrind_proxy.sh takes the mock (and its bench, unused for the gateway) from release.
cargo build --release -p tower-llm-chaos --bin mock-upstream
cargo bench -p tower-llm-benches --bench gateway_load --no-run
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
VALGRIND_OPTS="--dump-instr=yes --compress-pos=no --compress-strings=no --demangle=no" \
  KEEP_ALIVE=1 GATEWAY_BIN="$OUT/tower-llm-gateway" \
  "$ROOT/benches-crate/scripts/callgrind_proxy.sh" gateway 10 10 50 "$WORK/cg"
python3 "$ROOT/benches-crate/scripts/hot_symbols.py" --object tower-llm-gateway \
  "$WORK"/cg.*.1 "$WORK"/cg.*.2 > "$OUT/hot-symbols.txt"
echo "$(wc -l < "$OUT/hot-symbols.txt") functions in $OUT/hot-symbols.txt"
# Cargo does not read the list, only the arguments: a list named by its contents makes a new
# list link again (the same name would leave the binary linked with an earlier list).
SUM=$(sha256sum < "$OUT/hot-symbols.txt" | cut -c1-16)
cp "$OUT/hot-symbols.txt" "$OUT/hot-symbols-$SUM.txt"
cargo rustc --profile "$PROFILE" -p tower-llm-gateway --bin tower-llm-gateway -- \
  -C "link-arg=-Wl,--symbol-ordering-file=$OUT/hot-symbols-$SUM.txt" \
  -C link-arg=-Wl,--no-warn-symbol-ordering
echo "ordered: $OUT/tower-llm-gateway"
