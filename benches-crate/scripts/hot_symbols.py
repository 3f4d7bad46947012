#!/usr/bin/env python3
"""The gateway's per-answer functions, in an order for the linker (issue 18, target 3).

    VALGRIND_OPTS="--dump-instr=yes --compress-pos=no --compress-strings=no --demangle=no" \\
        KEEP_ALIVE=1 benches-crate/scripts/callgrind_proxy.sh gateway 10 10 50 /tmp/cgm
    scripts/hot_symbols.py --object tower-llm-gateway /tmp/cgm.*.1 /tmp/cgm.*.2 > hot-symbols.txt
    RUSTFLAGS="-C link-arg=-Wl,--symbol-ordering-file=$PWD/hot-symbols.txt \\
               -C link-arg=-Wl,--no-warn-symbol-ordering" \\
        cargo build --profile dist -p tower-llm-gateway

Prints the mangled names of the functions of OBJECT that ran in the dumps' windows (callgrind
run with `--demangle=no`): first those run at least `--per-event` times (once per streamed
event or more), then the others (once or a few times per answer), each group in the order the
dump first shows them. Given to LLD's `--symbol-ordering-file` (LLD is the default linker of
x86_64 Linux since Rust 1.90), the answer's code is laid out together instead of across the
binary: see BENCHMARKS.md, "what the first token waits for: the code's layout". The names carry
the compiler's hashes, so a list made from one build only partly matches a later one (LLD
ignores names it does not find): make it again from the build you ship.
"""
import argparse
import collections

import code_footprint  # the dump reader, next to this script


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--object", default="tower-llm-gateway",
                        help="the binary whose functions to list (the end of callgrind's `ob=`)")
    parser.add_argument("--per-event", type=int, default=100)
    args = parser.parse_args()
    most = collections.Counter()
    first_seen = {}
    for path in args.dumps:
        # In the order the dump first shows each instruction (a Counter keeps insertion order).
        executed, function = code_footprint.read(path)
        for (obj, address), times in executed.items():
            fn = function[(obj, address)]
            if obj is None or not obj.endswith(args.object) or fn is None:
                continue
            # callgrind marks a recursive call's frames `name'2`; the symbol is `name`.
            fn = fn.split("'")[0]
            most[fn] = max(most[fn], times)
            first_seen.setdefault(fn, len(first_seen))
    if not most:
        raise SystemExit(f"no function of `{args.object}` in {args.dumps}")
    if not any(name.startswith(("_ZN", "_R")) for name in most):
        raise SystemExit("the names are demangled: make the dumps with `--demangle=no`")
    hot = sorted((f for f in most if most[f] >= args.per_event), key=first_seen.get)
    rest = sorted((f for f in most if most[f] < args.per_event), key=first_seen.get)
    for name in hot + rest:
        print(name)


if __name__ == "__main__":
    main()
