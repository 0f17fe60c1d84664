"""Where a camex daemon's resident memory goes (goal: <= 20 MiB each).

    python -m bench.memory [--only camex-v2-p2p,...] [--seconds 3]
    python -m bench.memory --imports

Per bench entry (a fresh lab, as `bench.run` makes it): each daemon's VmHWM
and VmRSS, split by /proc/PID/smaps into anonymous memory (the Python heap,
OpenSSL's and Rust's allocations) and file-backed pages by library (code
and read-only data of libpython, cryptography's _rust.abi3.so, libc, ...;
shared between all daemons of a machine but counted in each one's RSS),
idle and after iperf3 TCP x1, TCP x4 and 64-byte UDP (`--phases`: after
each of them). `--imports`: RSS
after each step of a daemon's imports, in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

from lab.netns import StarTopology
from lab.traffic import iperf3

from . import procstat
from .run import byte_compile_camex
from .tunnels import BY_NAME

DEFAULT = ("camex-v2-p2p", "camex-v2-relay", "camex-p2p-enc", "camex-relay-plain")

# The order in which a daemon imports (camex.cli -> options -> loop -> the
# role's modules), so that each line is what that step adds.
IMPORT_STEPS = (
    ("interpreter (python -c pass, with site)", ()),
    ("camex.base.log", ("camex.base.log",)),
    ("argparse", ("argparse",)),
    ("camex.daemon.options (parse, legacy codec)", ("camex.daemon.options",)),
    ("camex.daemon.loop (selectors, socket, control socket)", ("camex.daemon.loop",)),
    ("camex.base.child, camex.io.netlink (no pyroute2)", ("camex.io.netlink",)),
    ("cryptography _rust.abi3.so", ("cryptography.hazmat.bindings._rust",)),
    ("cryptography AEAD, X25519 modules", ("cryptography.hazmat.primitives.ciphers.aead",
                                           "cryptography.hazmat.primitives.asymmetric.x25519")),
    ("camex.legacy.client, camex.io (offload, gso)", ("camex.legacy.client", "camex.io.offload")),
    ("camex.v2 (core, server, client, noise, wire)", ("camex.v2.core",)),
    ("client_daemon, server_daemon, server_mux", ("camex.daemon.client", "camex.daemon.server")),
)

_PROBE = r"""
import importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
print(rss())
for step in sys.argv[1:]:
    for m in step.split(","):
        if m:
            importlib.import_module(m)
    print(rss())
"""


def import_steps() -> list:
    """[(step, RSS KiB after it)] in one fresh interpreter."""
    args = [",".join(mods) for _, mods in IMPORT_STEPS[1:]]
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                         text=True, check=True).stdout.split()
    return [(name, int(kib)) for (name, _), kib in zip(IMPORT_STEPS, out)]


def first_use() -> dict:
    """RSS (KiB) that the first ChaCha20-Poly1305 and X25519 operations add
    (OpenSSL initialises its providers and method caches on first use)."""
    code = r"""
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
a = rss(); ChaCha20Poly1305(bytes(32)).encrypt(bytes(12), bytes(1400), None); b = rss()
X25519PrivateKey.generate().exchange(X25519PrivateKey.generate().public_key()); c = rss()
print(b - a, c - b)
"""
    aead, x25519 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.split()
    return {"aead": int(aead), "x25519": int(x25519)}


def smaps(pid: int) -> dict:
    """{"anon": KiB, "files": {basename: KiB resident, file-backed}}."""
    files = collections.Counter()
    anon = 0
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            p = line.split()
            if "-" in p[0] and ":" not in p[0]:
                cur = os.path.basename(p[5]) if len(p) > 5 else "[anon]"
            elif p[0] == "Rss:":
                files[cur] += int(p[1])
            elif p[0] == "Anonymous:":
                files[cur] -= int(p[1])
                anon += int(p[1])
    return {"anon": anon, "files": {k: v for k, v in files.items() if v > 0}}


def _line(entry: str, phase: str, role: str, pid: int) -> str:
    m = smaps(pid)
    files = sorted(m["files"].items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{k} {v / 1024:.1f}" for k, v in files[:4])
    rest = sum(v for _, v in files[4:])
    return (f"| {entry} | {role} | {phase} | {procstat.peak_rss_kib(pid) / 1024:.1f} | "
            f"{procstat.rss_kib(pid) / 1024:.1f} | {m['anon'] / 1024:.1f} | "
            f"{sum(m['files'].values()) / 1024:.1f}: {top}, other {rest / 1024:.1f} |")


# The load, in this order; VmHWM only grows, so a phase's row shows what it added.
PHASES = (("after TCP x1", ()), ("after TCP x4", ("-P", "4")),
          ("after UDP 64 B", ("-u", "-b", "0", "-l", "64")))


def measure(name: str, seconds: float, phases: bool = False) -> list:
    rows = []
    with StarTopology(clients=2) as lab:
        up = BY_NAME[name].up(lab)
        time.sleep(0.5)
        rows += [_line(name, "idle", role, p.pid) for role, p in up.daemons]
        for phase, extra in PHASES:
            iperf3(up.client, up.server, up.target, seconds=seconds, extra=extra)
            if phases:
                rows += [_line(name, phase, role, p.pid) for role, p in up.daemons]
        if not phases:
            rows += [_line(name, "after load", role, p.pid) for role, p in up.daemons]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated bench entries (default: %s)" % ",".join(DEFAULT))
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per iperf3 run")
    ap.add_argument("--imports", action="store_true", help="RSS step by step through the imports")
    ap.add_argument("--phases", action="store_true",
                    help="a row after each load phase (TCP x1, TCP x4, UDP 64 B), not only at the end")
    args = ap.parse_args(argv)
    byte_compile_camex()
    if args.imports:
        print("| import step | RSS MiB after | added MiB |\n|---|---|---|")
        prev = None
        for name, kib in import_steps():
            print(f"| {name} | {kib / 1024:.1f} | {'' if prev is None else f'{(kib - prev) / 1024:+.1f}'} |")
            prev = kib
        use = first_use()
        print(f"\nFirst use (OpenSSL initialises on demand): ChaCha20-Poly1305 "
              f"{use['aead'] / 1024:+.1f} MiB, X25519 {use['x25519'] / 1024:+.1f} MiB")
        return 0
    if os.geteuid() != 0:
        print("bench.memory: needs root (network namespaces)", file=sys.stderr)
        return 1
    names = args.only.split(",") if args.only else DEFAULT
    print("| entry | daemon | phase | VmHWM MiB | VmRSS MiB | anonymous MiB | file-backed MiB (largest) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for row in measure(name, args.seconds, args.phases):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
