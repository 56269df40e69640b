#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Samples every vCPU's RIP through a QEMU monitor socket (scripts/profile.sh).

profile-sample.py MONITOR_SOCKET OUT_FILE CONSOLE_LOG

Waits for QEMU's monitor, then records `info registers -a` RIPs (hex RIP and CPL per line) while the
console log shows PROFILE-START but not yet PROFILE-END; stops at PROFILE-END or when QEMU
goes away. A developer tool: QEMU TCG has no PMU for perf inside the guest.
"""
import os
import re
import socket
import sys
import time

sock_path, out_path, log_path = sys.argv[1:4]


def log_has(marker):
    try:
        with open(log_path, 'rb') as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def connect():
    for _ in range(1200):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            return s
        except OSError:
            time.sleep(0.5)
    return None


s = connect()
if s is None:
    sys.exit('profile-sample: no monitor socket')
s.settimeout(5)


def command(text, until=b''):
    """Sends one monitor command; reads until its answer (containing `until`) and the prompt."""
    s.sendall((text + '\n').encode())
    buf = b''
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            data = s.recv(1 << 16)
        except socket.timeout:
            break
        if not data:
            raise EOFError
        buf += data
        if until in buf and buf.rstrip().endswith(b'(qemu)'):
            break
    return buf.decode(errors='replace')


# One line per vCPU: RIP=... RFL=... [flags] CPL=n
rip = re.compile(r'RIP=([0-9a-f]{16}) RFL=\S+ \[.{7}\] CPL=(\d)')
n = 0
try:
    command('')
    # Wait for the sampled window (no commands meanwhile: answers must not queue up).
    while not log_has('PROFILE-START'):
        time.sleep(0.2)
    with open(out_path, 'w') as out:
        while not log_has('PROFILE-END'):
            for m in rip.finditer(command('info registers -a', b'RIP=')):
                out.write(f'{m.group(1)} {m.group(2)}\n')
                n += 1
            time.sleep(0.01)
except (EOFError, OSError):
    pass
print(f'profile-sample: {n} samples', file=sys.stderr)
