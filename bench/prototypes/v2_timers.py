"""Micro-benchmark: the v2 server's timer bookkeeping with many clients.

    .venv/bin/python -m bench.prototypes.v2_timers [--peers 10000] [--rounds 2000]

Registers N clients on one in-memory V2Server (real handshakes, fake clock,
no sockets), gives every tenth one an open passive keepalive, then times:
- next_timer() as the server answers it now,
- the reference full walk (what next_timer() did before the timer heap),
- one relayed packet's server work (receive DATA + send to another peer),
  followed by next_timer(), as the event loop does after each wake-up,
- on_timer() when nothing is due.
Prints microseconds per call (best of 5 runs). Not a test: numbers only.

    .venv/bin/python -m bench.prototypes.v2_timers --live 10000 [--seconds 5]

The same question end to end (root, network namespaces): a v2 camex server
with two real v2 clients, an iperf3 run c1 -> server -> c2 (TCP through the
tunnel); then lab.loadgen.V2Load brings N more v2 clients up from the third
namespace (from 200 source addresses: the server limits handshakes per
address under load) and the same iperf3 run again.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.events import Send
from camex.v2.memlab import ipv4, make_server

PSK = b"B" * 32


def _reference():
    """The full walk over every peer and pending handshake (the server's
    next_timer() before its timer heaps), as the unit tests keep it."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "unit"))
    from test_v2_timers import reference_next_timer
    return reference_next_timer


def build(n: int, now: float = 1000.0):
    srv = make_server(global_psk=PSK, load_threshold=10**9)
    clients = []
    for i in range(n):
        addr_ip = ipaddress.IPv4Address("10.64.0.0") + i + 1
        c = ClientSession([PSK], f"c{i}", wire.Request(auto=False,
                                                        local_cidr=ipaddress.IPv4Interface(f"{addr_ip}/16")))
        ep = ("192.0.2.1", 20000 + i) if i < 40000 else ("192.0.2.2", i)
        t = now + i * 1e-4     # spread the sessions' ages a little
        for a in c.start(t):
            for r in srv.receive(a.data, ep, t):
                for b in c.receive(r.data, t):
                    if isinstance(b, Send):
                        srv.receive(b.data, ep, t)
        assert c.established, i
        clients.append((c, ep, str(addr_ip)))
    t = now + n * 1e-4
    for c, ep, ip in clients[::10]:   # an open passive keepalive on every tenth
        for d in c.encrypt([ipv4(ip, "10.64.0.1", b"x" * 40)], t):
            srv.receive(d, ep, t)
    return srv, clients, t


def best(fn, rounds: int) -> float:
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        out.append((time.perf_counter() - t0) / rounds)
    return min(out) * 1e6


def live(n: int, seconds: float) -> None:
    from lab import loadgen
    from lab.daemons import GLOBAL_PSK, Camex
    from lab.netns import StarTopology
    from lab.traffic import iperf3

    with StarTopology(clients=3) as lab:
        cx = Camex(lab, protocol="v2")
        srv = cx.start_server(encrypt=True, psk=GLOBAL_PSK)
        c1, c2, gen = lab.clients
        cx.start_client(c1, encrypt=True, psk=GLOBAL_PSK, local_cidr="10.64.200.1/16")
        cx.start_client(c2, encrypt=True, psk=GLOBAL_PSK, local_cidr="10.64.200.2/16")
        c1.wait_ping("10.64.200.2", timeout=10)
        r2 = iperf3(c1, c2, "10.64.200.2", seconds=seconds)
        print(f"2 v2 clients: relay {r2.gbps:.3f} Gbit/s (server pid {srv.pid})", flush=True)
        ips = [f"10.250.2.{i}" for i in range(3, 203)]
        with gen.ipr() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            for ip in ips:
                ipr.addr("add", index=idx, address=ip, prefixlen=24)
        load = loadgen.V2Load(gen, (gen.server_ip, cx.port), n, GLOBAL_PSK.encode(), bind_ips=ips)
        try:
            t0 = time.monotonic()
            load.start_all()
            up = load.wait_up(timeout=300)
            print(f"{up} of {n} load clients up in {time.monotonic() - t0:.1f} s", flush=True)
            load.collect(1.0)
            rn = iperf3(c1, c2, "10.64.200.2", seconds=seconds)
            print(f"{up + 2} v2 clients: relay {rn.gbps:.3f} Gbit/s "
                  f"({rn.gbps / r2.gbps:.2f} x the 2-client figure)", flush=True)
        finally:
            load.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--live", type=int, metavar="N", help="end to end with N load clients")
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    if a.live:
        live(a.live, a.seconds)
        return
    reference_next_timer = _reference()
    t0 = time.perf_counter()
    srv, clients, now = build(a.peers)
    print(f"{a.peers} peers registered in {time.perf_counter() - t0:.1f} s")
    assert srv.next_timer() == reference_next_timer(srv)
    (c1, ep1, ip1), (_, _, ip2) = clients[0], clients[1]
    pkt = ipv4(ip1, ip2, b"y" * 100)
    p2 = srv.route(ipaddress.IPv4Address(ip2).packed)
    data = c1.encrypt([pkt], now)[0]
    dgrams = [c1.encrypt([pkt], now)[0] for _ in range(a.rounds * 5 + 10)]
    it = iter(dgrams)

    def relay():
        srv.receive(next(it), ep1, now)
        srv.send(p2, (pkt,), now)
        srv.next_timer()

    def relay_only():
        srv.receive(next(it), ep1, now)
        srv.send(p2, (pkt,), now)

    rows = [("next_timer()", best(srv.next_timer, a.rounds)),
            ("reference full walk", best(lambda: reference_next_timer(srv), max(10, a.rounds // 20))),
            ("on_timer(now), nothing due", best(lambda: srv.on_timer(now), max(10, a.rounds // 20)))]
    n = a.rounds // 2
    dgrams[:] = [c1.encrypt([pkt], now)[0] for _ in range(n * 5 + 10)]
    it = iter(dgrams)
    rows.append(("relay one packet (receive+send)", best(relay_only, n)))
    dgrams[:] = [c1.encrypt([pkt], now)[0] for _ in range(n * 5 + 10)]
    it = iter(dgrams)
    rows.append(("relay one packet + next_timer()", best(relay, n)))
    del data
    assert srv.next_timer() == reference_next_timer(srv)
    for name, us in rows:
        print(f"  {name:36s} {us:10.2f} us")
    # What the event loop makes of that cost (camex.loop.Deadline): past
    # Deadline.CHEAP per ask it asks less often and timers may fire late.
    from camex.loop import Deadline
    for name, fn in (("next_timer()", srv.next_timer),
                     ("reference full walk", lambda: reference_next_timer(srv))):
        slack = []
        for _ in range(20):
            dl = Deadline(fn, time.monotonic)
            dl.ask(time.monotonic())
            slack.append(dl.slack)
        slack.sort()
        print(f"  loop Deadline slack, {name:21s} {slack[10] * 1e3:7.1f} ms (median of 20 asks)")


if __name__ == "__main__":
    main()
