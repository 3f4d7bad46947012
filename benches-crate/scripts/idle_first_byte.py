#!/usr/bin/env python3
"""Time to the first answer byte after an idle pause, through each path (issue 18, target 3).

    scripts/idle_first_byte.py direct=127.0.0.1:A bare=127.0.0.1:B gateway=127.0.0.1:C

Each path gets one keep-alive connection and is sent the same chat request, one at a time,
first back to back and then with 50 ms of idle between requests; the paths take turns (20
requests each, three rounds). Printed: the median time from sending a request to its first
answer byte (the first `data: {` event of a stream, or the response head of a JSON answer), and
each path's difference from the first path. Start the mock (`mock-upstream --tokens 10
--token-interval-ms 0`), the bare proxy (`gateway_load --serve-bare-proxy`) and the gateway
(`callgrind_proxy.sh`'s configuration) first.
"""
import socket
import statistics
import sys
import time

SSE = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
JSON = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def timed(addr, body, stream, count, pause):
    host, port = addr.split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    request = (head + "content-length: %d\r\n\r\n" % len(body)).encode() + body
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(request)
        seen, first = b"", None
        while True:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("%s closed the connection" % addr)
            seen += data
            if first is None and ((b"data: {" in seen) if stream else (b"\r\n\r\n" in seen)):
                first = time.perf_counter() - start
            if stream and seen.endswith(b"0\r\n\r\n"):
                break
            if not stream and b'"usage"' in seen and seen.rstrip().endswith(b"}"):
                break
        times.append(first * 1e6)
        if pause:
            time.sleep(pause)
    sock.close()
    return times


def main():
    paths = [arg.split("=", 1) for arg in sys.argv[1:]]
    if len(paths) < 2:
        raise SystemExit(__doc__)
    print("| answer | between requests | " + " | ".join(n for n, _ in paths) + " |")
    print("|---|---|" + "---:|" * len(paths))
    for kind, body, stream in (("SSE", SSE, True), ("JSON", JSON, False)):
        for pause in (0.0, 0.05):
            got = {name: [] for name, _ in paths}
            for _ in range(3):
                for name, addr in paths:
                    got[name] += timed(addr, body, stream, 20, pause)
            base = statistics.median(got[paths[0][0]])
            cells = []
            for name, _ in paths:
                p50 = statistics.median(got[name])
                cells.append("%.0f µs" % p50 if name == paths[0][0] else "%.0f µs (+%.0f)" % (p50, p50 - base))
            print("| %s | %s | %s |" % (kind, "back to back" if pause == 0 else "50 ms idle", " | ".join(cells)))


if __name__ == "__main__":
    main()
