"""What the dual-stack server socket costs per receive and per send.

    python -m bench.edge_micro [--rounds 400]

Over loopback, 100-byte datagrams from an IPv4 sender, 50 per round, the
rounds of the four cases interleaved, the best round of each (the least
disturbed by other tenants of the machine):

- AF_INET recvmsg / AF_INET6 recvmsg: the bare receive on an IPv4 socket
  and on a dual-stack one (the kernel and Python build a v4-mapped
  4-tuple);
- AF_INET / AF_INET6 gro_receiver: the same through camex's receive edge
  (camex.io.gso.gro_receiver; on AF_INET6 the canonical endpoint from a
  dict cache, camex.base.endpoint).

Then the send edge: sockaddr_for()'s cached mapping of a canonical IPv4
endpoint to its v4-mapped form, once per lone datagram or per GSO group,
against computing it each time.
"""

from __future__ import annotations

import argparse
import socket
import time

from camex.base import endpoint
from camex.io import gso, udp

BATCH = 50


def _case(srv, recv):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    dst = ("127.0.0.1", srv.getsockname()[1])
    srv.setblocking(True)

    def one() -> float:
        for _ in range(BATCH):
            c.sendto(b"x" * 100, dst)
        t0 = time.perf_counter()
        for _ in range(BATCH):
            recv()
        return (time.perf_counter() - t0) / BATCH * 1e9
    return one


def _per_call(f, arg, n: int = 200000) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f(arg)
        best = min(best, (time.perf_counter() - t0) / n * 1e9)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args(argv)
    v4, v6 = udp.server_socket(0, "127.0.0.1"), udp.server_socket(0)
    space = gso.GRO_CMSG_SPACE
    cases = {
        "AF_INET recvmsg": _case(v4, lambda: v4.recvmsg(gso.RECV_BUF, space)),
        "AF_INET6 recvmsg (dual-stack)": _case(v6, lambda: v6.recvmsg(gso.RECV_BUF, space)),
        "AF_INET gro_receiver": _case(v4, gso.gro_receiver(v4)),
        "AF_INET6 gro_receiver (canonical)": _case(v6, gso.gro_receiver(v6)),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.rounds):
        for name, one in cases.items():
            best[name] = min(best[name], one())
    for name, ns in best.items():
        print(f"{name:36s} {ns:6.0f} ns per receive")
    to_sock = gso.sockaddr_for(v6)
    ep = ("127.0.0.1", 9)
    print(f"{'send mapping, cached (sockaddr_for)':36s} {_per_call(to_sock, ep):6.0f} ns")
    print(f"{'send mapping, computed (sockaddr_v6)':36s} {_per_call(endpoint.sockaddr_v6, ep):6.0f} ns")
    v4.close()
    v6.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
