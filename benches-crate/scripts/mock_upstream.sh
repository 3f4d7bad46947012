# Sourced by callgrind_proxy.sh and memcpy_sizes.sh (not run on its own).
#
#   start_mock WORK [mock-upstream arguments...]
#
# Starts "$T/mock-upstream" on a free loopback port with the given arguments (its output in
# WORK/mock.out), waits until it listens, and sets MOCK (its pid) and UPSTREAM (its host:port).
# The caller's EXIT trap stops it.
start_mock() {
  local work=$1
  shift
  "$T/mock-upstream" --listen 127.0.0.1:0 --quiet "$@" > "$work/mock.out" &
  MOCK=$!
  for _ in $(seq 1 50); do grep -q listening "$work/mock.out" && break; sleep 0.1; done
  UPSTREAM=$(grep -o "127.0.0.1:[0-9]*" "$work/mock.out" | head -1)
}

# A free loopback port, for the proxy under test.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
