#!/usr/bin/env python3
"""A long chat request body for `callgrind_proxy.sh`'s JSON_BODY_FILE (issue 18, BENCHMARKS.md
"a long request's model read with the scan"): a system message and 20 turns of ~1.7 KB each,
with quotes and line breaks escaped, `temperature` and `max_tokens`; 35,650 bytes, the same
bytes on every run (seeded).

    python3 benches-crate/scripts/long_request_body.py > /tmp/long-body.json
    JSON_BODY_FILE=/tmp/long-body.json benches-crate/scripts/callgrind_proxy.sh gateway 1 1 100 /tmp/cg-long
"""
import json
import random
import sys

random.seed(7)
WORDS = (
    "resilience provider timeout retry fallback stream token budget circuit breaker latency "
    "gateway upstream answer question model context window"
).split()
messages = [
    {"role": "system", "content": 'You are a helpful assistant.\nAnswer "briefly" and cite sources.'}
]
for turn in range(20):
    text = " ".join(random.choice(WORDS) for _ in range(220))
    text = text.replace("retry", "retry\n", 3).replace("model", '"model"', 2)
    messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": text})
body = {"model": "m", "messages": messages, "temperature": 0.2, "max_tokens": 512}
sys.stdout.write(json.dumps(body, separators=(",", ":")))
