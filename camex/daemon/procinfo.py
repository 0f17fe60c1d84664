"""What the daemon process costs, for `camex status --json`: its resident
memory now and at its peak (VmRSS, VmHWM), the peaks of the short-lived
helpers it forked (camex.base.child), whether pyroute2 is loaded in it (it
must not be: the helpers do the netlink work) and whether `cryptography` is
(only with a passphrase: a plaintext daemon is 6-7 MiB smaller without it)."""

from __future__ import annotations

import os
import sys

from ..base import child


def _status_kib() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return out


def process_status() -> dict:
    kib = _status_kib()
    return {"pid": os.getpid(), "rss_kib": kib.get("VmRSS"), "peak_rss_kib": kib.get("VmHWM"),
            "helpers": {name: dict(st) for name, st in child.STATS.items()},
            "pyroute2_loaded": "pyroute2" in sys.modules,
            "crypto_loaded": "cryptography" in sys.modules}
