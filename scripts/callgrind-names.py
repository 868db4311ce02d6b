#!/usr/bin/env python3
"""Instructions per call from a callgrind dump, by function, with V8's JIT code named.

usage: callgrind-names.py <callgrind dump> <calls> <perf-PID.map> [top]

callgrind names JIT-compiled code only by address; node --perf-basic-prof writes a map of those
addresses to functions (later entries win where code was replaced). Garbage collection functions
are summed as [GC]. Also prints the same instructions by area (where they executed, not who
asked for them: an inline-cache miss or an allocation counts as V8's, whoever's code caused it).
Used by scripts/instruction-count.sh.
"""
import bisect
import re
import subprocess
import sys

dump, calls, map_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
top = int(sys.argv[4]) if len(sys.argv) > 4 else 30

entries = []  # (start, size, order, name)
try:
    with open(map_file) as f:
        for order, line in enumerate(f):
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3:
                entries.append((int(parts[0], 16), int(parts[1], 16), order, parts[2]))
except FileNotFoundError:
    pass
entries.sort()
starts = [e[0] for e in entries]


def jit_name(addr):
    best = None
    i = bisect.bisect_right(starts, addr) - 1
    for j in range(i, max(-1, i - 64), -1):
        start, size, order, name = entries[j]
        if start <= addr < start + size and (best is None or order > best[0]):
            best = (order, name)
    return best[1] if best else None


GC = re.compile(r"Scaveng|IterateObjectCache|RootVisitor|Heap|MarkCompact|Sweep|Marking|GCTracer|MemoryAllocator|ConcurrentMark|RememberedSet|SlotSet|Evacuat|PagedSpace|NewSpace|SemiSpace")
listing = subprocess.run(["callgrind_annotate", "--threshold=100", dump], capture_output=True, text=True, check=True).stdout
AREAS = [
    ("garbage collection", lambda n: n == "[GC]"),
    ("V8's JSON.parse / JSON.stringify", lambda n: "Json" in n),
    ("this project's JavaScript", lambda n: n.startswith("JIT ") and "/src/" in n and "/node_modules/" not in n),
    ("effect's JavaScript", lambda n: n.startswith("JIT ") and re.search(r"/node_modules/(effect|@effect/)", n) is not None),
    ("other packages' JavaScript", lambda n: n.startswith("JIT ") and "/node_modules/" in n),
    ("Node's JavaScript", lambda n: n.startswith("JIT ") and "node:" in n),
    ("V8's builtins (inline-cache misses, typed arrays, calls)", lambda n: n.startswith("Builtins_") or n.startswith("JIT Builtins")),
    ("libuv, libc and the kernel interface", lambda n: re.search(r"deps/uv|uv_|sysdeps|malloc|libc|__", n) is not None),
]


def area(name):
    for label, test in AREAS:
        if test(name):
            return label
    return "V8's and Node's C++ (allocation, handles, buffers, callbacks)"


by_name = {}
total = 0
for line in listing.splitlines():
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    ir = int(m.group(1).replace(",", ""))
    name = m.group(2)
    total += ir
    jit = re.match(r"\?\?\?:0x([0-9a-f]+) \[\?\?\?\]", name)
    if jit:
        name = "JIT " + (jit_name(int(jit.group(1), 16)) or name)
    else:
        name = re.sub(r"\s*\[/.*\]$", "", name).replace("???:", "")
        # the function's qualified name, not its parameters (a JSON function takes a HeapNumber)
        if GC.search(name.replace("(anonymous namespace)", "").split("(", 1)[0]):
            name = "[GC]"
    by_name[name] = by_name.get(name, 0) + ir
gc = by_name.get("[GC]", 0)
# Garbage collection depends on the heap's history (a window with one scavenge of a still-growing
# heap, or none): compare the rest between runs, and the [GC] line apart.
print(f"instructions per call: {total / calls:,.0f} ({(total - gc) / calls:,.0f} without garbage collection, {gc / calls:,.0f} in it)")
for name, ir in sorted(by_name.items(), key=lambda x: -x[1])[:top]:
    print(f"{ir / calls:10,.0f}  {name[:160]}")
by_area = {}
for name, ir in by_name.items():
    by_area[area(name)] = by_area.get(area(name), 0) + ir
print("by area:")
for label, ir in sorted(by_area.items(), key=lambda x: -x[1]):
    print(f"{ir / calls:10,.0f}  {label}")
