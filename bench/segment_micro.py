"""In memory, what cutting one 64 KB TSO super-packet costs, IPv4 and IPv6.

    python -m bench.segment_micro [--rounds 7] [--number 300]

camex.base.netpkt.segment on one TCP super-packet as a TSO TUN read
returns it (TCP timestamps on, 65,443 payload bytes: the largest that
fits an IPv4 total length with a 32-byte TCP header), cut at the MSS of a
1500-byte path: 1448 over IPv4, 1428 over IPv6; IPv6 at 1448 as well, the
same segment count as IPv4. Prints microseconds per super-packet and per
segment, the best of `rounds` rounds of `number` calls (CPU time of this
thread: waiting for a core on a shared machine is not counted).
No sockets, no TUN.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from camex.base import netpkt

PAYLOAD = 65535 - 20 - 32 - 40   # what also fits IPv6's fixed header


def tcp_header(seq: int) -> bytes:
    # ports, seq, ack, data offset 8 words, ACK, window, checksum, urgent,
    # then NOP NOP Timestamp
    return struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, 8 << 4, netpkt.TCP_ACK, 502, 0, 0) \
        + b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2)


def super4(payload: bytes) -> bytes:
    total = 20 + 32 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3]))
    return ip + tcp_header(1000) + payload


def super6(payload: bytes) -> bytes:
    ip = struct.pack("!IHBB16s16s", 6 << 28, 32 + len(payload), 6, 64,
                     bytes.fromhex("20010db8000000000000000000000002"),
                     bytes.fromhex("20010db8000000000000000000000003"))
    return ip + tcp_header(1000) + payload


def measure(hdr, packet, number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(number):
            netpkt.segment(hdr, packet)
        best = min(best, (time.thread_time() - t0) / number)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=300)
    a = ap.parse_args(argv)
    payload = os.urandom(PAYLOAD)
    cases = (
        ("TCPv4, MSS 1448", netpkt.VnetHdr((1, netpkt.GSO_TCPV4, 52, 1448, 20, 16)), super4(payload)),
        ("TCPv6, MSS 1428", netpkt.VnetHdr((1, netpkt.GSO_TCPV6, 72, 1428, 40, 16)), super6(payload)),
        ("TCPv6, MSS 1448", netpkt.VnetHdr((1, netpkt.GSO_TCPV6, 72, 1448, 40, 16)), super6(payload)),
    )
    for name, hdr, packet in cases:
        n = len(netpkt.segment(hdr, packet))
        t = measure(hdr, packet, a.number, a.rounds)
        print(f"{name}: {n} segments, {t * 1e6:.0f} us per super-packet, "
              f"{t * 1e6 / n:.2f} us per segment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
