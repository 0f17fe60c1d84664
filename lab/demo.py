"""`make demo`: the camex tunnel in a three-namespace lab, end to end.

Builds server + two client namespaces (the captures' lab: C1 10.250.0.2,
C2 10.250.1.2, server 10.250.0.1 / 10.250.1.1, tunnel 10.0.0.2 / 10.0.0.3),
then for each mode starts `camex` on all three, pings C2 from C1 through the
server, runs iperf3 C1 -> C2 through the tunnel, and stops the daemons. A
second lab of the same shape over IPv6-only veths (fd00:250:<i>::/64) then
runs v2 with IPv6 inside (C1 fd00:c::2, C2 fd00:c::3): ping -6 and
iperf3 -6. A table at the end compares the modes with the bare veth.
Everything is torn down on exit, Ctrl-C and SIGTERM included.

    .venv/bin/python -m lab.demo [--seconds N] [--pings N] [--keep-logs]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Callable, Optional

from .daemons import C2_PSK, GLOBAL_PSK, Camex, auto_config, vectors_config
from .netns import LabError, StarTopology
from .traffic import iperf3


@dataclasses.dataclass
class Row:
    mode: str
    crypto: str
    protocol: str = "-"
    loss: Optional[float] = None
    rtt_ms: Optional[float] = None
    gbps: Optional[float] = None
    retrans: Optional[int] = None
    error: Optional[str] = None


def _start_manual(cx: Camex, lab: StarTopology, encrypt: bool, protocol: Optional[str] = None):
    cx.protocol = protocol
    psk = GLOBAL_PSK if encrypt else None
    cx.start_server(encrypt=encrypt, psk=psk)
    for c in lab.clients:
        cx.start_client(c, encrypt=encrypt, psk=psk, routes=["10.251.0.0/24"] if c is lab.c1 else ())


def _start_auto(cx: Camex, lab: StarTopology, encrypt: bool, protocol: Optional[str] = None):
    cx.protocol = protocol
    # The captures' database: C2 has its own passphrase, C1 uses the global one.
    config = cx.write_config(vectors_config(c2_psk=C2_PSK if encrypt else None))
    cx.start_server(encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None, config=config)
    # Both clients at the same instant (the legacy server mixed them up).
    procs = [
        cx.start_client(lab.c1, wait=False, auto=True, encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None),
        cx.start_client(lab.c2, wait=False, auto=True, encrypt=encrypt, psk=C2_PSK if encrypt else None),
    ]
    for p in procs:
        cx.wait_client(p)


# Inner IPv6 addresses of the IPv6 mode (the server pushes them in auto mode).
V6_INNER = {"C1": "fd00:c::2", "C2": "fd00:c::3"}


def _start_auto_v6(cx: Camex, lab: StarTopology):
    """v2 auto clients with IPv6-only profiles, over the IPv6 underlay."""
    cx.protocol = None
    config = cx.write_config(auto_config(
        {cid: {"local_cidr": f"{a}/64"} for cid, a in V6_INNER.items()},
        defaults={"gateway_ip": "fd00:c::1", "route_cidr": "fd00:251::/48"}))
    cx.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    procs = [cx.start_client(c, wait=False, auto=True, encrypt=True, psk=GLOBAL_PSK)
             for c in lab.clients]
    for p in procs:
        cx.wait_client(p)


# The legacy protocol (what an unmodified C peer speaks) in each mode, then
# the daemon's default with a passphrase: the secure protocol v2.
SCENARIOS: list[tuple[str, str, Callable]] = [
    ("manual", "plaintext", lambda cx, lab: _start_manual(cx, lab, False)),
    ("manual", "encrypted, global key", lambda cx, lab: _start_manual(cx, lab, True, "legacy")),
    ("auto", "plaintext, config file", lambda cx, lab: _start_auto(cx, lab, False)),
    ("auto", "encrypted, C2 own key", lambda cx, lab: _start_auto(cx, lab, True, "legacy")),
    ("auto", "encrypted, default protocol", lambda cx, lab: _start_auto(cx, lab, True)),
]
# Run in the IPv6 lab: outer and inner IPv6, traffic to C2's IPv6 address.
SCENARIOS6: list[tuple[str, str, Callable]] = [
    ("auto", "encrypted, IPv6 underlay, IPv6 inside", _start_auto_v6),
]


def measure(lab: StarTopology, row: Row, dst_ns, dst_ip: str, pings: int, seconds: float) -> None:
    src = lab.c1
    # ping -6 / iperf3 -6 towards an IPv6 address (the tools would pick the
    # family from the address; saying it shows in the daemons' argv).
    six = ("-6",) if ":" in dst_ip else ()
    # Readiness: the first answered ping (no fixed sleep), then the series.
    src.wait_ping(dst_ip, timeout=20)
    p = src.ping(dst_ip, count=pings, interval=0.1, wait=1, extra=six)
    row.loss, row.rtt_ms = p.loss_pct, p.rtt_avg_ms
    r = iperf3(src, dst_ns, dst_ip, seconds=seconds, extra=six)
    row.gbps, row.retrans = r.gbps, r.retransmits
    if r.received_bytes < 1 << 20:
        raise LabError(f"iperf3 stalled: {r.received_bytes // 1024} KiB in {r.seconds:.0f} s")


def run_scenario(lab: StarTopology, mode: str, crypto: str, start: Callable, pings: int,
                 seconds: float, dst_ip: Optional[str] = None) -> Row:
    """``dst_ip``: where C1 sends through the tunnel (default C2's tunnel_ip)."""
    row = Row(mode, crypto)
    print(f"== {mode}, {crypto}", flush=True)
    before = len(lab.processes)
    try:
        cx = Camex(lab)
        start(cx, lab)
        for p in lab.processes[before:]:
            dev = Camex.tun_dev(p)
            if dev:
                print(f"   {p.ns.role}: {p.find(r'tunnel up: .*').group(0)}", flush=True)
        # What the server says it speaks with the clients (camex status).
        row.protocol = "/".join(sorted({c["protocol"] for c in cx.status(lab.server)["clients"]})) or "-"
        measure(lab, row, lab.c2, dst_ip or lab.c2.tunnel_ip, pings, seconds)
    except LabError as e:
        row.error = str(e).splitlines()[0]
        lab.keep_logs = True
        print(f"   FAILED: {e}", flush=True)
    finally:
        # Warnings and errors of the daemons (throttled, so few) tell why.
        for p in lab.processes[before:]:
            if "camex" in p.name:
                bad = [l for l in p.output().splitlines() if " WARNING " in l or " ERROR " in l]
                for line in bad[:3]:
                    print(f"   {p.ns.role}: {line}", flush=True)
        # Stop this mode's daemons (clients first) and check they left no
        # TUN behind, so the next mode starts from a clean lab.
        for p in reversed(lab.processes[before:]):
            rc = p.stop()
            if rc not in (0, None) and row.error is None and p.name.split("-")[1] == "camex":
                row.error = f"{p.name} exited with {rc}"
                lab.keep_logs = True
        for c in lab.clients:
            leftover = [n for n in c.links() if n.startswith("tun")]
            if leftover and row.error is None:
                row.error = f"{c.role}: {leftover} left after exit"
    if row.error is None:
        print(f"   ping {row.loss:.0f}% loss, rtt {row.rtt_ms:.2f} ms; iperf3 {row.gbps:.2f} Gbit/s", flush=True)
    return row


def baseline(lab: StarTopology, pings: int, seconds: float) -> Row:
    """The bare veth C1 -> server, for scale."""
    row = Row("veth", "no tunnel, C1 -> server")
    print("== veth without tunnel (C1 -> server)", flush=True)
    try:
        measure(lab, row, lab.server, lab.c1.server_ip, pings, seconds)
    except LabError as e:
        row.error = str(e).splitlines()[0]
    return row


def table(rows: list[Row]) -> str:
    head = ("mode", "tunnel", "protocol", "ping loss", "rtt avg", "iperf3", "retrans")
    lines = []
    for r in rows:
        loss = f"{r.loss:.0f}%" if r.loss is not None else "-"
        rtt = f"{r.rtt_ms:.3f} ms" if r.rtt_ms is not None else "-"
        if r.error:
            lines.append((r.mode, r.crypto, r.protocol, loss, rtt, "FAILED: " + r.error[:60], ""))
        else:
            lines.append((
                r.mode, r.crypto, r.protocol, loss, rtt, f"{r.gbps:.2f} Gbit/s",
                str(r.retrans) if r.retrans is not None else "-",
            ))
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*x) for x in lines]
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="iperf3 run time per mode (default 3)")
    ap.add_argument("--pings", type=int, default=20, help="pings per mode, 0.1 s apart (default 20)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the daemons' logs")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    rows = []
    with StarTopology() as lab:
        lab.keep_logs = args.keep_logs
        print(f"lab: {lab.server.name} ({', '.join(lab.server.links())}), "
              f"{lab.c1.name} {lab.c1.underlay}, {lab.c2.name} {lab.c2.underlay}", flush=True)
        rows.append(baseline(lab, args.pings, args.seconds))
        for mode, crypto, start in SCENARIOS:
            rows.append(run_scenario(lab, mode, crypto, start, args.pings, args.seconds))
        logdirs = [lab.logdir] if lab.keep_logs else []
    with StarTopology(family="ipv6") as lab6:
        lab6.keep_logs = args.keep_logs
        print(f"lab (IPv6 underlay): {lab6.c1.name} {lab6.c1.underlay}, "
              f"{lab6.c2.name} {lab6.c2.underlay}", flush=True)
        for mode, crypto, start in SCENARIOS6:
            rows.append(run_scenario(lab6, mode, crypto, start, args.pings, args.seconds,
                                     dst_ip=V6_INNER["C2"]))
        logdirs += [lab6.logdir] if lab6.keep_logs else []
    print()
    print(table(rows))
    print("(legacy: the CX2P protocol of the deployed C camex; v2: camex's secure protocol)")
    print(f"\n{len(rows) - 1} modes in {time.monotonic() - t0:.0f} s; lab torn down.")
    if logdirs:
        print(f"logs: {' '.join(logdirs)}")
    failed = [r for r in rows if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The lab's `with` block has torn everything down on the way out.
        print("\ninterrupted; lab torn down", file=sys.stderr)
        sys.exit(130)
