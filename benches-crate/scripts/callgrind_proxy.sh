#!/bin/bash
# Instructions per streamed event and per JSON answer of the gateway example or of the bare
# pass-through proxy (issue 18), counted by callgrind (exact; independent of the machine's load).
#
#   scripts/callgrind_proxy.sh gateway|bare TOKENS N_SSE N_JSON OUT_PREFIX
#
# Starts mock-upstream --tokens TOKENS, the proxy under `valgrind --tool=callgrind` in front of
# it, warms it up with 3 streamed answers, then zeroes the counters, sends N_SSE streamed answers
# one after the other (dump `sse`: OUT_PREFIX.<pid>.1), zeroes again, sends N_JSON JSON answers
# (dump `json`: OUT_PREFIX.<pid>.2). Instructions per event = the `sse` dump's total divided by
# N_SSE x (TOKENS + 2). Needs the release builds of gateway_load's commands, curl and valgrind;
# GATEWAY_BIN overrides the gateway binary, BENCH_BIN the bench whose `--serve-bare-proxy` is
# the bare proxy (a PGO build of it: `pgo_build.sh --bare`); JSON_BODY_FILE sends the JSON
# answers' requests with the body in that file; BARE_PROXY_INLINE=1 counts the bare proxy with
# its upstream connections driven inline (`tower_llm_benches::inline_proxy`) instead; UPSTREAM_TLS=h2|h1 serves the mock
# over https (a CA and certificate made with openssl, trusted through the providers' `ca_file`)
# with HTTP/2 offered by ALPN (h2: the providers' default `http2 = true`) or not (h1: the
# providers set `http2 = false`), the gateway only; the mock must be built with
# `--features tls`; PROVIDER_EXTRA adds its lines to both providers (`pool_max_idle_per_host = 0`:
# a new connection per answer); KEEP_ALIVE=1 sends the JSON answers' requests over one client
# connection kept alive instead of one connection each (the streamed ones always use one each).
# MOCK_PROFILE gives the mock a fault profile (`model m=status:503; default=healthy`: the primary
# target fails, the secondary, asked for `backup-model`, answers).
# Read a dump with `callgrind_annotate --inclusive=yes`.
set -eu
WHAT=$1; TOKENS=$2; NS=$3; NJ=$4; OUT=$5
T=${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/release
. "$(dirname "$0")/mock_upstream.sh"
BENCH=${BENCH_BIN:-$(ls -t "$T"/deps/gateway_load-* | grep -v '\.d$' | head -1)}
WORK=$(mktemp -d)
MOCK_TLS=(); SCHEME=http; PROVIDER_TLS=""
case "${UPSTREAM_TLS:-}" in
  "") ;;
  h2|h1)
    [ "$WHAT" = gateway ] || { echo "UPSTREAM_TLS: the gateway only" >&2; exit 2; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -subj /CN=bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2> /dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
      -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2> /dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$WORK/leaf.ext"
    openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
      -CAcreateserial -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" 2> /dev/null
    MOCK_TLS=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
    SCHEME=https
    PROVIDER_TLS="ca_file = \"$WORK/ca.pem\""
    if [ "$UPSTREAM_TLS" = h1 ]; then
      MOCK_TLS+=(--no-http2)
      PROVIDER_TLS="$PROVIDER_TLS
http2 = false"
    fi
    ;;
  *) echo "UPSTREAM_TLS: h2 or h1" >&2; exit 2 ;;
esac
start_mock "$WORK" --tokens "$TOKENS" ${MOCK_PROFILE:+--profile "$MOCK_PROFILE"} "${MOCK_TLS[@]}"
trap 'kill $MOCK 2>/dev/null; rm -rf "$WORK"' EXIT
if [ "$WHAT" = gateway ]; then
  PORT=$(free_port)
  # The gateway_load bench's configuration (breaker, retry, bulkhead on; two targets).
  cat > "$WORK/gateway.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0
allow_unauthenticated = true
[request]
max_body_bytes = 1048576
[[providers]]
name = "primary"
base_url = "$SCHEME://$UPSTREAM/v1"
$PROVIDER_TLS
${PROVIDER_EXTRA:-}
[[providers]]
name = "secondary"
base_url = "$SCHEME://$UPSTREAM/v1"
$PROVIDER_TLS
${PROVIDER_EXTRA:-}
[[routes]]
match = "*"
targets = [ { provider = "primary" }, { provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 } ]
cache = false
static_answer = false
[stream]
ttft_ms = 10000
idle_ms = 30000
total_ms = 120000
[breaker]
enabled = true
[retry]
enabled = true
max_attempts = 2
attempt_timeout_ms = 30000
[bulkhead]
enabled = true
max_in_flight = 64
max_queued = 128
max_wait_ms = 1000
[cache]
enabled = false
TOML
  valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" "${GATEWAY_BIN:-$T/tower-llm-gateway}" \
    --config "$WORK/gateway.toml" --listen "127.0.0.1:$PORT" --quiet > /dev/null 2> "$WORK/valgrind.err" &
  PID=$!
  URL=http://127.0.0.1:$PORT/v1/chat/completions
else
  valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" "$BENCH" --serve-bare-proxy "$UPSTREAM" \
    > "$WORK/bare.out" 2> "$WORK/valgrind.err" &
  PID=$!
  for _ in $(seq 1 100); do grep -q listening "$WORK/bare.out" && break; sleep 0.2; done
  URL=http://$(grep -o "127.0.0.1:[0-9]*" "$WORK/bare.out" | head -1)/v1/chat/completions
fi
SSE='{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
JSON='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
# JSON_BODY_FILE=<file>: the JSON answers' request body from a file instead (a long conversation:
# scripts/long_request_body.py).
[ -n "${JSON_BODY_FILE:-}" ] && JSON="@$JSON_BODY_FILE"
ask() { curl -s -X POST -H 'content-type: application/json' -d "$1" "$URL"; }
for _ in $(seq 1 100); do ask "$JSON" > /dev/null && break; sleep 0.3; done
for _ in 1 2 3; do ask "$SSE" > /dev/null; done
callgrind_control -z "$PID" > /dev/null
for _ in $(seq 1 "$NS"); do
  EVENTS=$(ask "$SSE" | grep -c '^data: ' || true)
  [ "$EVENTS" = $((TOKENS + 2)) ] || { echo "a streamed answer had $EVENTS events" >&2; exit 1; }
done
callgrind_control -d sse "$PID" > /dev/null
callgrind_control -z "$PID" > /dev/null
if [ -n "${KEEP_ALIVE:-}" ]; then
  # One curl for all of them: one connection, kept alive (what a client with a connection pool
  # does); its set-up is spread over the N_JSON answers.
  URLS=(); for _ in $(seq 1 "$NJ"); do URLS+=("$URL"); done
  curl -s -X POST -H 'content-type: application/json' -d "$JSON" "${URLS[@]}" > /dev/null
else
  for _ in $(seq 1 "$NJ"); do ask "$JSON" > /dev/null; done
fi
callgrind_control -d json "$PID" > /dev/null
kill -TERM "$PID"
wait "$PID" 2>/dev/null || true
SSE_IR=$(grep -h '^summary' "$OUT.$PID.1" | cut -d' ' -f2)
JSON_IR=$(grep -h '^summary' "$OUT.$PID.2" | cut -d' ' -f2)
echo "$WHAT: $SSE_IR instructions for $NS streamed answers of $((TOKENS + 2)) events: $((SSE_IR / (NS * (TOKENS + 2)))) per event"
[ "$NJ" -gt 0 ] && echo "$WHAT: $JSON_IR instructions for $NJ JSON answers: $((JSON_IR / NJ)) per answer"
echo "dumps: $OUT.$PID.1 (sse) $OUT.$PID.2 (json)"
