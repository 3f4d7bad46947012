#!/usr/bin/env python3
"""The machine code a proxy runs per answer: distinct cache lines and pages (issue 18, target 3).

    VALGRIND_OPTS="--dump-instr=yes --compress-pos=no --compress-strings=no" KEEP_ALIVE=1 \\
        benches-crate/scripts/callgrind_proxy.sh gateway 10 10 50 /tmp/cgi
    scripts/code_footprint.py [--by crate|function] [--top N] [--per-event EVENTS] DUMP...

A request that runs after other processes had the CPU finds little of its code in the caches:
each 64-byte line of code it executes is fetched again, and each 4-KiB page of code needs its
translation again. This counts, in a callgrind dump made with `--dump-instr=yes
--compress-pos=no` (one cost line per instruction address), the distinct lines and pages of
code executed in the dump's window, and which crates (or functions) they belong to. The code
of one answer is the same every time, so over a window of many like answers the count is what
one answer touches.

`--per-event EVENTS` (a window of streamed answers with EVENTS events in all) also splits the
lines into those executed at least EVENTS times (run for every event) and the rest (run once or
a few times per answer: the answer's setup, what its first event waits for).
"""
import argparse
import collections
import re


def read(path):
    """{(object, address): times executed}, and {(object, address): function}."""
    obj = fn = None
    executed = collections.Counter()
    function = {}
    after_call = False
    with open(path) as dump:
        for line in dump:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                # The next cost line is the call instruction with its callee's inclusive cost.
                after_call = True
            elif line.startswith("0x"):
                fields = line.split()
                address = (obj, int(fields[0], 16))
                function.setdefault(address, fn)
                if after_call:
                    after_call = False
                    executed[address] += 0
                else:
                    executed[address] += int(fields[2]) if len(fields) > 2 else 0
    return executed, function


def crate_of(function):
    name = function.lstrip("<&*( ")
    found = re.match(r"([a-z_][a-z0-9_]*)::", name)
    return found.group(1) if found else "(" + (function.split("@")[0][:40]) + ")"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--by", choices=("crate", "function"), default="crate")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--per-event", type=int, default=0)
    args = parser.parse_args()
    for path in args.dumps:
        executed, function = read(path)
        lines, pages, owner = {}, set(), collections.Counter()
        for (obj, address), times in executed.items():
            key = (obj, address >> 6)
            if key not in lines:
                fn = function[(obj, address)] or "?"
                owner[crate_of(fn) if args.by == "crate" else fn] += 1
            lines[key] = max(lines.get(key, 0), times)
            pages.add((obj, address >> 12))
        print(f"{path}: {len(lines)} lines of code ({len(lines) * 64 / 1024:.0f} KiB) "
              f"on {len(pages)} pages")
        if args.per_event:
            every = sum(1 for times in lines.values() if times >= args.per_event)
            print(f"  executed at least {args.per_event} times (per event): {every}; "
                  f"fewer (per answer): {len(lines) - every}")
        for name, count in owner.most_common(args.top):
            print(f"  {count:6d} {100 * count / len(lines):5.1f} %  {name[:150]}")


if __name__ == "__main__":
    main()
