#!/usr/bin/env python3
"""Maps the per-block counts of insn_count's tbs=PATH files to the symbols of an unstripped
binary and prints the functions that execute the most instructions per generated token.

    profile.py BINARY LOAD_BASE BASE_TBS FULL_TBS TOKENS [TOP]

BASE_TBS and FULL_TBS are the block files of the two runs tools/arm-insn-count.sh makes (1 and
1+TOKENS generated tokens); their difference divided by TOKENS is one decode step. LOAD_BASE
(hex) is where QEMU loaded the position-independent binary (`qemu-aarch64 -d page` shows it).
"""
import bisect
import collections
import subprocess
import sys


def symbols(binary):
    out = subprocess.run(["nm", "-C", "--defined-only", "-n", binary],
                         check=True, capture_output=True, text=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def per_symbol(path, base, addrs, names, end):
    totals = collections.Counter()
    with open(path) as f:
        for line in f:
            vaddr, n, execs = line.split()
            off = int(vaddr, 16) - base
            insns = int(n) * int(execs)
            if 0 <= off < end:
                i = bisect.bisect_right(addrs, off) - 1
                totals[names[i] if i >= 0 else "?"] += insns
            else:
                totals["[outside the binary: libc, loader]"] += insns
    return totals


def main():
    binary, base, base_tbs, full_tbs, tokens = sys.argv[1:6]
    top = int(sys.argv[6]) if len(sys.argv) > 6 else 20
    base, tokens = int(base, 16), int(tokens)
    addrs, names = symbols(binary)
    end = addrs[-1] + 0x10000 if addrs else 0
    a = per_symbol(base_tbs, base, addrs, names, end)
    b = per_symbol(full_tbs, base, addrs, names, end)
    diff = {k: (b[k] - a.get(k, 0)) / tokens for k in b}
    total = sum(diff.values())
    print(f"{total / 1e6:.2f} M instructions per token")
    for name, n in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / 1e6:9.3f} M  {100 * n / total:5.1f}%  {name[:150]}")


if __name__ == "__main__":
    main()
