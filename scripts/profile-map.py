#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Maps sampled RIPs to kernel and module symbols and prints a flat profile (scripts/profile.sh).

profile-map.py [--top N] --system-map FILE --log CONSOLE_LOG [--module NAME=KO]... RIPS
"""
import argparse
import bisect
import collections
import re
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument('--top', type=int, default=40)
ap.add_argument('--system-map', required=True)
ap.add_argument('--log', required=True)
ap.add_argument('--module', action='append', default=[])
ap.add_argument('--module-dir', default='')
ap.add_argument('rips')
a = ap.parse_args()

log = open(a.log, errors='replace').read()
ksym = {}
for m in re.finditer(r'PROFILE-KSYM ([0-9a-f]+) \w (\w+)', log):
    ksym[m.group(2)] = int(m.group(1), 16)
# The last listing wins: modules loaded by the command line itself appear at the end.
sections = {}
for m in re.finditer(r'PROFILE-SECT (\S+) (\S+) 0x([0-9a-f]+)', log):
    sections[(m.group(1), m.group(2))] = int(m.group(3), 16)

syms = []  # (address, name)
smap = {}
for line in open(a.system_map):
    addr, kind, name = line.split()[:3]
    if kind in 'tTwW':
        smap[name] = int(addr, 16)
        syms.append((int(addr, 16), name))
offset = 0
if '_text' in ksym and '_text' in smap:
    offset = ksym['_text'] - smap['_text']
syms = [(addr + offset, name) for addr, name in syms]

for spec in a.module:
    name, ko = spec.split('=', 1)
    dump = subprocess.run(['objdump', '-t', ko], capture_output=True, text=True).stdout
    ends = collections.defaultdict(int)
    for line in dump.splitlines():
        # value flags section size name
        f = line.split()
        if len(f) < 5 or not re.fullmatch(r'[0-9a-f]{16}', f[0]):
            continue
        sect = next((x for x in f if x.startswith('.text') or x == '.noinstr.text'), None)
        if sect is None or (name, sect) not in sections or 'F' not in f[1:-3]:
            continue
        value, size, sym = int(f[0], 16), int(f[-2], 16), f[-1]
        base = sections[(name, sect)]
        syms.append((base + value, f'{sym} [{name}]'))
        ends[sect] = max(ends[sect], value + size)
    # Samples past a section's last function symbol are still that module's.
    for sect, end in ends.items():
        syms.append((sections[(name, sect)] + end, f'[{name} {sect} unnamed]'))

syms.sort()
addrs = [s[0] for s in syms]
count = collections.Counter()
total = 0
for line in open(a.rips):
    rip, cpl = line.split()
    rip = int(rip, 16)
    total += 1
    if rip < 0xffff800000000000:
        # Low addresses: the L1 processes (CPL 3) or an L2 guest running at CPL 0, as the
        # selftests' guests do (their code sits at the same low addresses as the test binary).
        count['[user, CPL 3]' if cpl == '3' else f'[low address, CPL {cpl}: an L2 guest]'] += 1
        continue
    i = bisect.bisect_right(addrs, rip) - 1
    count[syms[i][1] if i >= 0 else '[unknown]'] += 1
print(f'profile: {total} samples (KASLR offset {offset:#x})')
for name, n in count.most_common(a.top):
    print(f'{100.0 * n / max(total, 1):6.2f}% {n:7d}  {name}')
