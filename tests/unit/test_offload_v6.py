"""TCP and UDP over IPv6 in camex.base.netpkt: cutting TSO/USO super-packets,
completing partial checksums, merging TCPv6 trains. Every checksum is
checked against Scapy's: a packet re-parsed with IPv6(bytes) and rebuilt
with its checksum left to Scapy must come out byte for byte the same."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Raw

from camex.base import netpkt
from tests.support.scapy_check import valid6

SRC, DST = "2001:db8:1::2", "2001:db8:2::3"
TS = [("NOP", None), ("NOP", None), ("Timestamp", (11, 22))]


scapy_valid = valid6     # Scapy's verdict on the L4 checksum of an IPv6 packet


def tcp6_super(payload: bytes, flags="PA", seq=1000, options=TS, partial=True) -> bytes:
    """What a TSO6 TUN read returns: one IPv6 + TCP header over all the
    payload, the checksum field holding the pseudo-header sum (NEEDS_CSUM)
    or, with `partial` False, garbage (segment() must not read it)."""
    p = IPv6(src=SRC, dst=DST, fl=0x12345, tc=0x20, hlim=61) / TCP(
        sport=40000, dport=5201, seq=seq, ack=55, flags=flags, window=502,
        options=list(options)) / Raw(payload)
    b = bytearray(bytes(p))
    ps = netpkt.pseudo6(b, 6, len(b) - 40) % 0xFFFF if partial else 0x1234
    b[56:58] = ps.to_bytes(2, "big")
    return bytes(b)


def hdr_tcp6(hl: int, mss: int):
    return netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV6, hl, mss, 40, 16))


# ------------------------------------------------------------- segment


@pytest.mark.parametrize("plen,mss", [
    (64000, 1428),       # a full 64 KB super-packet at a 1500-byte path's MSS
    (5 * 1000, 1000),    # an exact multiple: the last segment is full
    (5 * 1000 + 1, 1000),  # one byte over: a 1-byte last segment
    (4001, 1427),        # odd MSS, odd total: payloads start at odd offsets
    (1000, 1000),        # exactly one MSS: one packet
    (7, 1000),           # less than one MSS
])
def test_segment_tcp6_super_packet(plen, mss):
    payload = os.urandom(plen)
    sup = tcp6_super(payload, flags="FPA", seq=0xFFFFF000)  # wraps past 2**32
    segs = netpkt.segment(hdr_tcp6(72, mss), sup)
    assert len(segs) == -(-plen // mss)
    got = b""
    for i, s in enumerate(segs):
        assert scapy_valid(s), f"segment {i}: TCP checksum differs from Scapy's"
        p = IPv6(bytes(s))
        assert p.plen == len(s) - 40 and p.nh == 6
        assert (p.fl, p.tc, p.hlim, p.src, p.dst) == (0x12345, 0x20, 61, SRC, DST)
        t = p[TCP]
        assert t.seq == (0xFFFFF000 + i * mss) & 0xFFFFFFFF
        assert (t.ack, t.window, t.sport, t.dport) == (55, 502, 40000, 5201)
        assert t.options == TS
        last = i == len(segs) - 1
        # FIN and PSH only on the last segment, as the kernel does.
        assert str(t.flags) == ("FPA" if last else "A")
        seg_payload = bytes(t.payload)
        assert len(seg_payload) == (mss if not last else plen - i * mss)
        got += seg_payload
    assert got == payload


def test_segment_tcp6_cwr_only_on_the_first():
    sup = tcp6_super(os.urandom(3000), flags="CA", options=())
    segs = [IPv6(bytes(s)) for s in netpkt.segment(hdr_tcp6(60, 1000), sup)]
    assert [str(s[TCP].flags) for s in segs] == ["AC", "A", "A"]
    assert all(scapy_valid(s) for s in segs)


def test_segment_tcp6_ignores_what_the_checksum_field_held():
    payload = os.urandom(2500)
    a = netpkt.segment(hdr_tcp6(72, 1000), tcp6_super(payload, partial=True))
    b = netpkt.segment(hdr_tcp6(72, 1000), tcp6_super(payload, partial=False))
    assert [bytes(x) for x in a] == [bytes(x) for x in b]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=6000), st.integers(min_value=1, max_value=1500))
def test_segment_tcp6_any_size_matches_scapy(payload, mss):
    segs = netpkt.segment(hdr_tcp6(72, mss), tcp6_super(payload))
    assert all(scapy_valid(s) for s in segs)
    assert b"".join(bytes(IPv6(bytes(s))[TCP].payload) for s in segs) == payload


def test_segment_udp6_uso():
    payload = os.urandom(10 * 1200 + 33)
    b = bytearray(bytes(IPv6(src=SRC, dst=DST) / UDP(sport=5000, dport=6000) / Raw(payload)))
    b[46:48] = (netpkt.pseudo6(b, 17, len(b) - 40) % 0xFFFF).to_bytes(2, "big")
    segs = netpkt.segment(netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_UDP_L4, 48, 1200, 40, 6)),
                          bytes(b))
    assert len(segs) == 11
    for i, s in enumerate(segs):
        assert scapy_valid(s)
        p = IPv6(bytes(s))
        assert p[UDP].len == len(s) - 40 == p.plen
        assert bytes(p[UDP].payload) == payload[i * 1200:(i + 1) * 1200]


@pytest.mark.parametrize("proto", ["tcp", "udp", "tcp-odd"])
def test_needs_csum_completion_over_ipv6(proto):
    """A plain read with NEEDS_CSUM: csum_start 40, csum_offset 16 (TCP)
    or 6 (UDP), the field holding the IPv6 pseudo-header sum."""
    l4 = UDP(sport=1, dport=2) if proto == "udp" else TCP(sport=1, dport=2, flags="A")
    pay = os.urandom(1001 if proto == "tcp-odd" else 1000)
    ref = bytes(IPv6(src=SRC, dst=DST) / l4 / Raw(pay))
    b = bytearray(ref)
    off = 6 if proto == "udp" else 16
    b[40 + off:42 + off] = (netpkt.pseudo6(b, ref[6], len(b) - 40) % 0xFFFF).to_bytes(2, "big")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_NONE, 0, 0, 40, off))
    (out,) = netpkt.segment(hdr, bytes(b))
    assert bytes(out) == ref and scapy_valid(out)


def test_refused_super_packets():
    sup = tcp6_super(os.urandom(3000))
    # The GSO type must match the IP version, both ways.
    with pytest.raises(netpkt.OffloadError, match="IPv6"):
        netpkt.segment(netpkt.VnetHdr((1, netpkt.GSO_TCPV4, 72, 1000, 40, 16)), sup)
    from scapy.layers.inet import IP
    v4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(bytes(3000)))
    with pytest.raises(netpkt.OffloadError, match="IPv4"):
        netpkt.segment(hdr_tcp6(40, 1000), v4)
    # Extension headers: refused (dropped by the caller), never sent whole.
    ext = bytes(IPv6(src=SRC, dst=DST) / IPv6ExtHdrDestOpt() / TCP(flags="A") / Raw(bytes(3000)))
    with pytest.raises(netpkt.OffloadError, match="extension headers"):
        netpkt.segment(netpkt.VnetHdr((1, netpkt.GSO_TCPV6, 68, 1000, 48, 16)), ext)
    # A payload length beyond the read, a truncated header, MSS 0.
    bad = bytearray(sup)
    bad[4:6] = (len(sup)).to_bytes(2, "big")
    for pkt, mss in ((bytes(bad), 1000), (sup[:50], 1000), (sup, 0)):
        with pytest.raises(netpkt.OffloadError):
            netpkt.segment(hdr_tcp6(72, mss), pkt)


# ------------------------------------------------------------- coalesce


def train6(n=5, mss=1388, last=700, seq=5000, flags_last="A", fl=7):
    pays = [os.urandom(mss) for _ in range(n - 1)] + [os.urandom(last)]
    out, s = [], seq
    for i, pay in enumerate(pays):
        f = flags_last if i == n - 1 else "A"
        out.append(bytes(IPv6(src=SRC, dst=DST, fl=fl) / TCP(
            sport=40000, dport=5201, seq=s, ack=9, flags=f, window=500,
            options=TS) / Raw(pay)))
        s += len(pay)
    return out, b"".join(pays)


@pytest.mark.parametrize("mss", [1388, 1387])
def test_coalesce_merges_a_tcp6_train(mss):
    pkts, payload = train6(mss=mss, flags_last="PA")
    (vnet, bufs), = list(netpkt.coalesce(pkts))
    h = netpkt.parse_vnet(vnet)
    assert (h.flags, h.gso_type, h.gso_size, h.hdr_len) == (0, netpkt.GSO_TCPV6, mss, 72)
    m = b"".join(bytes(b) for b in bufs)
    assert scapy_valid(m)
    p = IPv6(m)
    assert p.plen == len(m) - 40 and bytes(p[TCP].payload) == payload
    assert p[TCP].seq == 5000 and str(p[TCP].flags) == "PA"


def test_coalesce_tcp6_keeps_apart_what_must_not_merge():
    pkts, _ = train6(n=3, last=1388)
    other_label = train6(n=3, last=1388, fl=8)[0]
    writes = list(netpkt.coalesce([pkts[0], other_label[1]]))
    assert [netpkt.parse_vnet(v).gso_type for v, _ in writes] == [netpkt.GSO_NONE] * 2
    corrupt = bytearray(pkts[1])
    corrupt[500] ^= 1
    (vnet, bufs), = list(netpkt.coalesce([pkts[0], bytes(corrupt), pkts[2]]))
    assert not scapy_valid(b"".join(bytes(b) for b in bufs))  # the kernel drops it
    ext = [bytes(IPv6(src=SRC, dst=DST) / IPv6ExtHdrDestOpt() / TCP(seq=s, flags="A")
                 / Raw(bytes(1000))) for s in (1, 1001)]
    assert [netpkt.parse_vnet(v).gso_type for v, _ in netpkt.coalesce(ext)] == [0, 0]
    icmp = [bytes(IPv6(src=SRC, dst=DST) / ICMPv6EchoRequest())] * 2
    assert [b for _, b in netpkt.coalesce(icmp)] == [[icmp[0]], [icmp[1]]]


def test_segment_then_coalesce_gives_back_the_tcp6_super_packet():
    payload = os.urandom(40 * 1388 + 3)
    sup = tcp6_super(payload, flags="A")
    (vnet, bufs), = list(netpkt.coalesce(netpkt.segment(hdr_tcp6(72, 1388), sup)))
    m = b"".join(bytes(b) for b in bufs)
    assert scapy_valid(m) and m[72:] == payload
    assert netpkt.parse_vnet(vnet).gso_type == netpkt.GSO_TCPV6


# ------------------------------------------- the TSO TUN's readers (socket pair)


def test_a_tcp6_super_packet_read_is_whole_for_bulk_and_cut_for_the_rest():
    """What the daemons call on a TSO TUN: read_items hands a TCPV6 read
    on whole (a v2 BULK record, as an IPv4 one), read_packets cuts it into
    checksummed segments; one with an extension header is refused by both."""
    import socket

    from camex.base.contract import SuperPacket
    from camex.io import offload

    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev = offload.OffloadTun(os.dup(ours.fileno()), "t0", "test", False)
    ours.close()
    payload = os.urandom(3500)
    vnet = netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV6, 72, 1000, 40, 16)
    try:
        peer.send(vnet + tcp6_super(payload, flags="PA"))
        (item,) = dev.read_items()
        assert type(item) is SuperPacket and item[0].gso_type == netpkt.GSO_TCPV6
        assert bytes(item[1]) == tcp6_super(payload, flags="PA")
        peer.send(vnet + tcp6_super(payload, flags="PA"))
        items = dev.read_packets()
        assert [type(x) for x in items] != [SuperPacket] and len(items) == 4
        assert all(scapy_valid(x) for x in items)
        assert b"".join(bytes(IPv6(bytes(x))[TCP].payload) for x in items) == payload
        # One that cannot be cut (an extension header) is dropped and counted.
        ext = bytes(IPv6(src=SRC, dst=DST) / IPv6ExtHdrDestOpt() / TCP(flags="A") / Raw(bytes(3000)))
        peer.send(netpkt.pack_vnet(1, netpkt.GSO_TCPV6, 68, 1000, 48, 16) + ext)
        assert dev.read_items() == [] and dev.errors == 1
        # A merged TCPv6 write goes out as one GSO_TCPV6 write.
        pkts, _ = train6(n=3, last=1388)
        dev.write_batch(pkts)
        msg = peer.recv(70000)
        assert netpkt.parse_vnet(msg).gso_type == netpkt.GSO_TCPV6 and scapy_valid(msg[10:])
        # A BULK super-packet written whole, its header as it came (the
        # one-item case: a TCP stream's usual write); `camex status
        # --json` counts both.
        dev.write_batch([SuperPacket(vnet, tcp6_super(payload))])
        assert peer.recv(70000) == vnet + tcp6_super(payload)
        c = dev.counters()
        assert (c["errors"], c["coalesced"], c["gso_writes"]) == \
            (1, 3, {"tcp4": 0, "tcp6": 2, "udp": 0})   # (coalesced as write_batch counts it)
    finally:
        dev.close()
        peer.close()


def test_tso_asks_for_tso6():
    from camex.io import offload
    assert offload.TSO_FLAGS & offload.TUN_F_TSO6 and offload.TSO_FLAGS & offload.TUN_F_TSO4


def test_v2_bulk_takes_tcp6_super_packets_and_refuses_extension_headers():
    """BULK records are of either family (docs/PROTOCOL.md, BULK): a TCPv6
    super-packet is a record (tests/unit/test_v2_bulk_v6.py carries it
    through the cores); a USO header on it, or an extension header, is not."""
    from camex.v2 import bulk
    sup = tcp6_super(os.urandom(3000))
    assert bulk.record_of(hdr_tcp6(72, 1000), sup) == (1000, sup)
    assert bulk.record_of(netpkt.VnetHdr((1, netpkt.GSO_UDP_L4, 48, 1000, 40, 6)), sup) is None
    ext = bytes(IPv6(src=SRC, dst=DST) / IPv6ExtHdrDestOpt() / TCP(flags="A") / Raw(bytes(3000)))
    assert bulk.record_of(netpkt.VnetHdr((1, netpkt.GSO_TCPV6, 68, 1000, 48, 16)), ext) is None
    assert bulk.tun_items(1000, ext) == [] and bulk.segments(1000, ext) == []
