"""The bytes that memcpy copies per answer, by call site and size, from a `memcpy_sizes.c` dump.

    memcpy_sizes.py DUMP ANSWERS TOP

Prints the total bytes and calls per answer, then the TOP (call site, size) pairs by bytes per
answer, each call site as its inlined frames (file:line, innermost first) and function; a binary
built with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` gives the file:line frames.
"""
import subprocess, collections, sys, re
path, nj, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
maps, rows = [], []
for line in open(path):
    if line.startswith("MAP "):
        p = line[4:].split()
        if len(p) >= 6:
            lo, hi = [int(x, 16) for x in p[0].split("-")]
            maps.append((lo, hi, int(p[2], 16), p[5]))
    else:
        a, s, c = line.split(); rows.append((int(a, 16), int(s), int(c)))
segs = {}
def vaddr(f, off):
    if f not in segs:
        segs[f] = [(int(l.split()[1],16), int(l.split()[2],16), int(l.split()[4],16)) for l in subprocess.run(["readelf","-lW",f],capture_output=True,text=True).stdout.splitlines() if l.strip().startswith("LOAD")]
    for po, pv, fs in segs[f]:
        if po <= off < po + fs: return off - po + pv
    return off
agg = collections.Counter(); where = {}
for a, s, c in rows:
    for lo, hi, off, f in maps:
        if lo <= a < hi:
            v = vaddr(f, a - lo + off); agg[(v, f, s)] += s*c/nj; break
print("total bytes/answer", round(sum(agg.values())), "calls/answer", round(sum(c for _,_,c in rows)/nj,1))
def short(fn): return re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>[^<>]*)*>", "<…>", fn)[:70]
for (v, f, s), b in agg.most_common(top):
    if "libc" in f or "ld-linux" in f: print(f"{b:7.0f} B {s:5d}x{b/s:.1f} {f}"); continue
    out = subprocess.run(["addr2line", "-i", "-f", "-C", "-e", f, hex(v-1)], capture_output=True, text=True).stdout.strip().split("\n")
    frames = [(out[i], out[i+1]) for i in range(0, len(out)-1, 2)]
    desc = " <- ".join(fl.split("/")[-1] for fn, fl in frames[:6])
    print(f"{b:7.0f} B {s:5d}x{b/s:.1f}  {desc}   [{short(frames[-1][0]) if frames else ''}]")
