"""Watching one link of a lab namespace, as tcpdump would: an AF_PACKET
socket on that link, read by a background thread that hands each packet to
a callback until close().

Users: lab.attacks.Sniffer (parses UDP datagrams to replay them) and
`PcapRecorder` (frames into a pcap for camex-dissect, the live dissect
tests). lab.traffic.UdpSniffer reads its socket on demand instead.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable, Optional

from camex.dissect.capture import LINKTYPE_ETHERNET, PcapWriter

ETH_P_ALL = 0x0003  # outgoing packets reach ETH_P_ALL sockets only
ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it


def _ipv4_udp(packet: bytes) -> bool:
    return len(packet) >= 28 and packet[0] >> 4 == 4 and packet[9] == 17


def is_udp_fragment(packet: bytes) -> bool:
    """An IPv4/UDP fragment: more-fragments set or a non-zero offset."""
    return _ipv4_udp(packet) and bool(struct.unpack_from("!H", packet, 6)[0] & 0x3FFF)


def parse_udp(packet: bytes):
    """(src, sport, dst, dport, payload) of a whole IPv4/UDP datagram, else
    None (other protocols, fragments)."""
    if not _ipv4_udp(packet) or is_udp_fragment(packet):
        return None
    ihl = (packet[0] & 0xF) * 4
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    return (socket.inet_ntoa(packet[12:16]), sport, socket.inet_ntoa(packet[16:20]), dport,
            packet[ihl + 8:ihl + length])


class LinkTap:
    """Calls ``on_packet(bytes)`` from a background thread for every packet
    link ``ifname`` of ``ns`` (a lab.netns.Namespace) carries.

    ``ethertype`` ETH_P_ALL sees both directions with the Ethernet header
    (``cooked=False``, what a pcap of LINKTYPE_ETHERNET holds); ETH_P_IP
    sees what the link receives; ``cooked`` packets start at the IP header.
    """

    def __init__(self, ns, ifname: str, on_packet: Callable[[bytes], None],
                 ethertype: int = ETH_P_ALL, cooked: bool = False):
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        self.sock = ns.socket(socket.AF_PACKET, kind, socket.htons(ethertype))
        self.sock.bind((ifname, ethertype))
        # A short timeout so that close() is noticed without a wake-up packet.
        self.sock.settimeout(0.1)
        self.on_packet = on_packet
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"tap-{ifname}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                pkt = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:  # the socket was closed under us
                return
            self.on_packet(pkt)

    def close(self) -> None:
        """Stop the thread (after the packet it handles), close the socket."""
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PcapRecorder:
    """Every frame crossing link ``ifname`` of ``ns`` (both directions)
    into a pcap at ``path``, as `tcpdump -w` would. ``rcvbuf`` (bytes)
    enlarges the socket's buffer beyond the sysctl limit (root), so that
    a burst (e.g. of BULK fragments) is not dropped."""

    def __init__(self, ns, ifname: str, path, rcvbuf: Optional[int] = None):
        self.writer = PcapWriter(path, linktype=LINKTYPE_ETHERNET)
        self.tap = LinkTap(ns, ifname, lambda frame: self.writer.write(time.time(), frame))
        if rcvbuf:
            self.tap.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)

    def close(self) -> None:
        self.tap.close()
        self.writer.close()
