"""The in-guest half of `make bench-vm` (run by guest.sh, suite "bench").

Two namespaces, a (10.88.0.1) and b (10.88.0.2), joined by lab/vm/relay.py:
side A is camex.ko's `camex` interface in one variant and a tun.ko
interface in the other, side B is always tun.ko.  iperf3 (TCP, a -> b)
measures each variant; the variants alternate for several rounds in the
same boot so that drift in the emulated machine hits both alike.  Results
go to OUTDIR/bench.json.

    python -m lab.vm.bench_guest OUTDIR [SECONDS [ROUNDS [QUEUE_LEN]]]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from pyroute2 import IPRoute

from lab.netns import Lab
from lab.traffic import iperf3

A_IP, B_IP, PREFIX = "10.88.0.1", "10.88.0.2", 24


def one_run(kind: str, seconds: float) -> tuple[float, int | None]:
    """(bits per second received, TCP retransmits) with side A = kind."""
    relay = subprocess.Popen([sys.executable, "-m", "lab.vm.relay", kind],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = relay.stdout.readline().split()
        assert line and line[0] == "ready", f"relay did not start: {line}"
        a_if, b_if = line[1], line[2]
        with Lab() as lab:
            a, b = lab.add_ns("a"), lab.add_ns("b")
            with IPRoute() as ipr:
                for ifname, ns in ((a_if, a), (b_if, b)):
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    ipr.link("set", index=idx, net_ns_fd=ns.name)
            a.add_address(a_if, f"{A_IP}/{PREFIX}")
            b.add_address(b_if, f"{B_IP}/{PREFIX}")
            a.link_up(a_if)
            b.link_up(b_if)
            a.wait_ping(B_IP, timeout=20)
            res = iperf3(a, b, B_IP, seconds=seconds)
            return res.received_bps, res.retransmits
    finally:
        relay.kill()
        relay.wait()


def main(argv: list[str]) -> int:
    outdir = argv[0]
    # Arguments, not environment: virtme-ng does not pass the host's on.
    seconds = float(argv[1]) if len(argv) > 1 else 8.0
    rounds = int(argv[2]) if len(argv) > 2 else 3
    queue_len = argv[3] if len(argv) > 3 else ""
    subprocess.run(["modprobe", "tun"], check=True)
    params = [f"queue_len={queue_len}"] if queue_len else []
    subprocess.run(["insmod", os.environ["CAMEX_KO"], *params], check=True)
    results: dict[str, list[float]] = {"camex": [], "tun": []}
    retrans: dict[str, list] = {"camex": [], "tun": []}
    try:
        for _ in range(rounds):
            for kind in ("camex", "tun"):
                bps, rtx = one_run(kind, seconds)
                results[kind].append(bps)
                retrans[kind].append(rtx)
                print(f"{kind}: {bps / 1e6:.1f} Mbit/s, {rtx} retransmits", flush=True)
                time.sleep(0.5)
    finally:
        subprocess.run(["rmmod", "camex"])
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "kernel": os.uname().release,
        "seconds": seconds, "rounds": rounds, "queue_len": queue_len or "default",
        "runs_bps": results, "median_bps": med, "retransmits": retrans,
        "ratio": med["camex"] / med["tun"] if med["tun"] else None,
    }
    with open(os.path.join(outdir, "bench.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
