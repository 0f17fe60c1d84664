"""In memory, what one lone v2 DATA datagram costs to receive and to send.

    python -m bench.lone_micro [--count 20000] [--rounds 7] [--size 100]

One server core and one client core (camex.v2.core), a handshake done in
memory, then `count` DATA datagrams each carrying one IPv4 packet of
`size` bytes, sealed beforehand with fresh counters, fed one by one:

- client rx: V2ClientCore.datagram_received (the flat path of
  camex.v2.lone, behind the BULK fast receiver, as the daemon calls it);
- server rx: V2ServerCore.datagram_received, local delivery;
- client tx / server tx: tun_packet on either side;
- the same through the full paths (`_datagram_received`, `_tun_packet`,
  `_deliver`): what the flat paths save.

Prints nanoseconds per datagram (CPU time of this thread: time spent
waiting for a core on a shared machine is not counted), the best of
`rounds` rounds (the least disturbed by other tenants of the machine), warm
caches: a check added to a flat path shows here before it shows anywhere
else. No sockets, no TUN.
"""

from __future__ import annotations

import argparse
import sys
import time

from camex.daemon.config import parse_config
from camex.v2 import wire
from camex.v2.core import V2ClientCore, V2ServerCore
from camex.testing.memlab import det_rng, handshake, ipv4

CONF = """
[defaults]
gateway_ip = 10.0.0.1
[client cam1]
local_cidr = 10.0.0.2/24
"""
PW = b"bench-lone-passphrase"
ADDR = ("192.0.2.1", 4001)


def pair():
    """A server and a client with an established, confirmed session."""
    srv = V2ServerCore(global_passphrase=PW, config=parse_config(CONF), local_delivery=True,
                       rng=det_rng(b"srv"))
    cli = V2ClientCore(auto=True, passphrase=PW, client_id="cam1", rng=det_rng(b"cli"))
    now = 100.0
    assert handshake(srv, cli, ADDR, now) and srv.server.peers, "no session in memory"
    cli.to_tun.clear()
    srv.to_tun.clear()
    return srv, cli, now + 1.0


def _per(fn, items, rounds: int, reset) -> float:
    best = float("inf")
    for r in range(rounds):
        batch = items(r)
        t0 = time.thread_time()
        for x in batch:
            fn(x)
        best = min(best, (time.thread_time() - t0) / len(batch))
        reset()
    return best * 1e9


def measure(count: int = 20000, rounds: int = 7, size: int = 100) -> dict:
    srv, cli, now = pair()
    peer = next(iter(srv.server.peers.values()))
    up = ipv4("10.0.0.2", "10.0.0.1", b"u" * (size - 20))
    down = ipv4("10.0.0.1", "10.0.0.2", b"d" * (size - 20))

    def from_server(_r):   # fresh counters each round: no replay
        s = peer.current
        return [s.seal(wire.pack_records([down]), now) for _ in range(count)]

    def from_client(_r):
        s = cli.session.current
        return [s.seal(wire.pack_records([up]), now) for _ in range(count)]

    def reset():
        cli.to_tun.clear()
        cli.to_net.clear()
        srv.to_tun.clear()
        srv.outbox.clear()

    out = {}
    out["client rx"] = _per(lambda d: cli.datagram_received(d, now), from_server, rounds, reset)
    out["client rx, full path"] = _per(lambda d: cli._datagram_received(d, now), from_server,
                                       rounds, reset)
    out["server rx"] = _per(lambda d: srv.datagram_received(d, ADDR, now), from_client, rounds,
                            reset)
    out["server rx, full path"] = _per(lambda d: srv._datagram_received(d, ADDR, now),
                                       from_client, rounds, reset)
    ups = lambda _r: [up] * count        # noqa: E731
    downs = lambda _r: [down] * count    # noqa: E731
    out["client tx"] = _per(lambda p: cli.tun_packet(p, now), ups, rounds, reset)
    out["client tx, full path"] = _per(lambda p: cli._tun_packet(p, now), ups, rounds, reset)
    out["server tx"] = _per(lambda p: srv.tun_packet(p, now), downs, rounds, reset)
    out["server tx, full path"] = _per(lambda p: srv._deliver(p, now), downs, rounds, reset)
    # Everything went where it should: the figures are of work done.
    assert cli.rx_packets >= 2 * rounds * count and peer.stats["rx"] >= 2 * rounds * count
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lone_micro",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="datagrams per round")
    ap.add_argument("--rounds", type=int, default=7, help="rounds; the best is kept")
    ap.add_argument("--size", type=int, default=100, help="inner IPv4 packet bytes (>= 20)")
    args = ap.parse_args(argv)
    if args.size < 20:
        ap.error("--size: at least 20 (an IPv4 header)")
    res = measure(args.count, args.rounds, args.size)
    for k, v in res.items():
        print(f"{k:22} {v:8.0f} ns per datagram")
    return 0


if __name__ == "__main__":
    sys.exit(main())
