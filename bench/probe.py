"""Fine-grained readiness probe: the first echo reply through a new tunnel.

`ping` in a loop costs a process start per try (milliseconds each) and exits
at once while the tunnel has no route yet, so the start-up time is measured
here with one raw ICMP socket created inside the client's namespace, sending
an echo request every few milliseconds until one is answered.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import threading
import time

from lab.attacks import icmp_echo_message
from lab.proc import in_ns


def ns_socket(nsname: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that belongs to namespace ``nsname`` (usable from any thread)."""
    return in_ns(nsname, lambda: socket.socket(family, type_, proto))


def _echo_request(ident: int, seq: int, v6: bool = False) -> bytes:
    if v6:
        # ICMPv6 echo request (type 128): the kernel fills in the checksum of
        # a raw ICMPv6 socket (it covers the IPv6 pseudo-header).
        return struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"camex-bench-probe"
    return icmp_echo_message(ident, seq, b"camex-bench-probe")


def first_reply(nsname: str, dst: str, t0: float, timeout: float = 15.0,
                interval: float = 0.002) -> float | None:
    """Seconds from ``t0`` (time.monotonic) to the first echo reply from
    ``dst`` seen in ``nsname``; None if none came within ``timeout``.

    Sends errors (no route yet, no neighbour) are expected while the tunnel
    comes up and are ignored.
    """
    v6 = ipaddress.ip_address(dst).version == 6
    if v6:
        dst = str(ipaddress.ip_address(dst))
        sock = ns_socket(nsname, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        sock = ns_socket(nsname, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    # An ICMPv6 raw socket hands over the message without the IPv6 header.
    reply_type = 129 if v6 else 0
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    try:
        sock.setblocking(False)
        deadline = t0 + timeout
        seq = 0
        while True:
            now = time.monotonic()
            if now > deadline:
                return None
            seq = (seq + 1) & 0xFFFF
            try:
                sock.sendto(_echo_request(ident, seq, v6), (dst, 0))
            except OSError:
                pass
            end = min(now + interval, deadline)
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([sock], [], [], left)
                if not r:
                    break
                data, addr = sock.recvfrom(2048)
                got = time.monotonic()
                ihl = 0 if v6 else (data[0] & 0x0F) * 4
                if addr[0] != dst or len(data) < ihl + 8:
                    continue
                itype, _, _, rid, _ = struct.unpack_from("!BBHHH", data, ihl)
                if itype == reply_type and rid == ident:
                    return got - t0
    finally:
        sock.close()
