"""Traffic between lab namespaces: iperf3 runs parsed from its JSON output.

Ping lives in netns.py (Namespace.ping / PingResult); this module adds
throughput so that the demo, the integration tests and the benchmarks read
iperf3 the same way.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from typing import Optional

from .capture import ETH_P_ALL, ETH_P_IP, is_udp_fragment, parse_udp
from .netns import LabError, Namespace

IPERF_PORT = 5201


@dataclasses.dataclass
class IperfResult:
    seconds: float
    sent_bytes: int
    received_bytes: int
    sent_bps: float
    received_bps: float
    retransmits: Optional[int]
    raw: dict

    @property
    def gbps(self) -> float:
        """Receiver-side goodput in Gbit/s (what actually crossed)."""
        return self.received_bps / 1e9


def parse_iperf3(text: str) -> IperfResult:
    """Parse `iperf3 -J` client output; raises LabError on an iperf3 error."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise LabError(f"iperf3 printed no JSON ({e}): {text[:500]!r}") from None
    if "error" in data:
        raise LabError(f"iperf3: {data['error']}")
    end = data["end"]
    sent, recv = end["sum_sent"], end["sum_received"]
    return IperfResult(
        seconds=recv.get("seconds", 0.0),
        sent_bytes=sent["bytes"],
        received_bytes=recv["bytes"],
        sent_bps=sent["bits_per_second"],
        received_bps=recv["bits_per_second"],
        retransmits=sent.get("retransmits"),
        raw=data,
    )


def iperf3(
    client: Namespace,
    server: Namespace,
    server_ip: str,
    seconds: float = 2.0,
    port: int = IPERF_PORT,
    udp_bitrate: Optional[str] = None,
    extra: tuple = (),
) -> IperfResult:
    """One TCP (or, with ``udp_bitrate``, UDP) iperf3 run from ``client`` to
    ``server_ip`` in ``server``; a one-shot iperf3 server is started there
    and stopped afterwards."""
    srv = server.spawn(["iperf3", "-s", "-1", "-B", server_ip, "-p", port], name="iperf3-server")
    try:
        server.wait_port(port, "tcp", timeout=10)
        argv = ["iperf3", "-c", server_ip, "-p", port, "-t", seconds, "-J", "--connect-timeout", 5000]
        if udp_bitrate:
            argv += ["-u", "-b", udp_bitrate]
        argv += list(extra)
        # iperf3 waits for the end-of-test exchange; a dead tunnel must not
        # hang the caller, hence the timeout well beyond the run time.
        res = client.run(argv, timeout=seconds + 20)
        return parse_iperf3(res.stdout)
    finally:
        srv.stop(timeout=2)


class UdpSniffer:
    """Watches IPv4 UDP datagrams of one port on one link of a namespace
    (AF_PACKET, no tcpdump): open it, make traffic, then read payloads().

    Used to check what camex puts on the wire (plaintext vs CX2P frames).
    Only unfragmented datagrams are returned; fragments are counted.
    """

    def __init__(self, ns: Namespace, ifname: str, port: int):
        self.port = port
        self.fragments = 0
        self.sock = ns.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((ifname, ETH_P_ALL))  # outgoing packets reach ETH_P_ALL taps only
        self.sock.setblocking(False)

    def datagrams(self) -> list[tuple[str, int, str, int, bytes]]:
        """(src, sport, dst, dport, payload) of each datagram seen so far."""
        out = []
        while True:
            try:
                pkt, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[1] != ETH_P_IP:
                continue
            d = parse_udp(pkt)
            if d is None:
                self.fragments += is_udp_fragment(pkt)
            elif self.port in (d[1], d[3]):
                out.append(d)
        return out

    def payloads(self) -> list[bytes]:
        return [d[4] for d in self.datagrams()]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
