#!/bin/bash
# The bytes memcpy copies per JSON answer in the gateway or the bare pass-through proxy (issue 18),
# by call site and size: large futures and requests moved whole between layers show here, where
# callgrind shows only memcpy's instructions.
#
#   scripts/memcpy_sizes.sh gateway|bare N_JSON TOP [GATEWAY_BIN]
#
# Builds the LD_PRELOAD shim memcpy_sizes.c with gcc, starts mock-upstream --tokens 10 and the
# proxy (callgrind_proxy.sh's gateway configuration) with the shim, warms up, then counts the
# memcpy calls of N_JSON JSON answers sent over one kept-alive connection and prints the TOP call
# sites by bytes per answer (memcpy_sizes.py). Build the gateway with
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only to see file:line frames; needs the release builds
# of gateway_load's commands (CARGO_TARGET_DIR), gcc, curl, addr2line and readelf.
set -eu
WHAT=$1; NJ=$2; TOP=$3
DIR=$(cd "$(dirname "$0")" && pwd)
T=${CARGO_TARGET_DIR:-$DIR/../../target}/release
. "$DIR/mock_upstream.sh"
BIN=${4:-$T/tower-llm-gateway}
BENCH=$(ls -t "$T"/deps/gateway_load-* | grep -v '\.d$' | head -1)
WORK=$(mktemp -d)
gcc -O2 -shared -fPIC -fno-builtin -o "$WORK/mc.so" "$DIR/memcpy_sizes.c" -ldl
start_mock "$WORK" --tokens 10
trap 'kill $MOCK 2>/dev/null; rm -rf "$WORK"' EXIT
if [ "$WHAT" = gateway ]; then
  PORT=$(free_port)
  # callgrind_proxy.sh's configuration (two targets; breaker, retry, bulkhead on), over http.
  sed -n '/^\[gateway\]/,/^TOML$/p' "$DIR/callgrind_proxy.sh" | grep -v '^TOML$' \
    | sed "s#\$SCHEME://\$UPSTREAM#http://$UPSTREAM#; s#^\$PROVIDER_TLS##; s#^\${PROVIDER_EXTRA:-}##" \
    > "$WORK/gateway.toml"
  MC_OUT=$WORK/dump LD_PRELOAD=$WORK/mc.so "$BIN" --config "$WORK/gateway.toml" \
    --listen "127.0.0.1:$PORT" --quiet > /dev/null 2>&1 &
  PID=$!
  URL=http://127.0.0.1:$PORT/v1/chat/completions
else
  MC_OUT=$WORK/dump LD_PRELOAD=$WORK/mc.so "$BENCH" --serve-bare-proxy "$UPSTREAM" > "$WORK/bare.out" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do grep -q listening "$WORK/bare.out" && break; sleep 0.2; done
  URL=http://$(grep -o "127.0.0.1:[0-9]*" "$WORK/bare.out" | head -1)/v1/chat/completions
fi
JSON='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
ask() { curl -s -X POST -H 'content-type: application/json' -d "$1" "$URL"; }
for _ in $(seq 1 100); do ask "$JSON" > /dev/null && break; sleep 0.3; done
for _ in 1 2 3; do ask "$JSON" > /dev/null; done
kill -USR1 "$PID"; sleep 0.2
URLS=(); for _ in $(seq 1 "$NJ"); do URLS+=("$URL"); done
curl -s -X POST -H 'content-type: application/json' -d "$JSON" "${URLS[@]}" > /dev/null
sleep 0.2; kill -USR2 "$PID"; sleep 0.3
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
python3 "$DIR/memcpy_sizes.py" "$WORK/dump" "$NJ" "$TOP"
