"""Scapy's verdict on a packet's checksums, for the offload tests.

A packet is valid if Scapy, asked to compute its IP and L4 checksums
(and IPv6's payload length) itself, builds the same bytes. The L4 payload
is kept as raw bytes, not dissected: camex's own Scapy layers, once some
test in the same process has imported camex.proto, recognise camex
datagrams by content on any UDP port, and a random payload that starts
like one (0xC2 and a message type: about one in two thousand) would be
rebuilt as that message, not as the bytes it was.
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw


def _l4_raw(p, pkt: bytes, start: int) -> None:
    """The TCP or UDP layer of `p` (at byte `start` of `pkt`) with its
    checksum left to Scapy and its payload as the raw bytes that follow."""
    for layer in (TCP, UDP):
        if layer in p:
            l4 = p[layer]
            hl = l4.dataofs * 4 if layer is TCP else 8
            l4.remove_payload()
            if len(pkt) > start + hl:
                l4.add_payload(Raw(pkt[start + hl:]))
            del l4.chksum
            return


def valid4(pkt) -> bool:
    """An IPv4 packet's header and TCP/UDP checksums, as Scapy computes them."""
    pkt = bytes(pkt)
    p = IP(pkt)
    del p[IP].chksum
    _l4_raw(p, pkt, (pkt[0] & 15) * 4)
    return bytes(p) == pkt


def valid6(pkt) -> bool:
    """An IPv6 packet's TCP/UDP checksum (no extension headers) and payload
    length, as Scapy computes them."""
    pkt = bytes(pkt)
    p = IPv6(pkt)
    if pkt[6] in (6, 17):
        _l4_raw(p, pkt, 40)
    del p[IPv6].plen
    return bytes(p) == pkt
