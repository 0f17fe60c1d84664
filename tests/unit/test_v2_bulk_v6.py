"""BULK records of both families (docs/PROTOCOL.md §4.7): a TCPv6
super-packet travels whole like a TCPv4 one - made a record, sealed in one
frame, routed by IPv6 destination, source-checked by IPv6 source, written
to the receiving TUN as one GSO_TCPV6 write - and what is not one (IPv6
extension headers, a spoofed source, a client without IPv6) is refused."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Raw

from camex.base import netpkt
from camex.base.contract import SuperPacket
from camex.v2 import bulk, framing, wire
from tests.support.v2_bulk_world import A1, A2, A3, MSS, World, tcp_super, v2

CONF6 = """
[defaults]
gateway_ip = 10.0.0.1
gateway_ip = fd00:c::1
[client C1]
local_cidr = 10.0.0.2/24
local_cidr = fd00:c::2/64
[client C2]
local_cidr = 10.0.0.3/24
local_cidr = fd00:c::3/64
[client L3]
local_cidr = 10.0.0.4/24
"""
C1, C2, GW = "fd00:c::2", "fd00:c::3", "fd00:c::1"


def tcp6_super(src, dst, payload_len, seq=1000):
    """What a TSO6 TUN read returns: (VnetHdr, IPv6/TCP super-packet, no
    extension header) with the pseudo-header sum in the TCP checksum field."""
    payload = bytes((i * 11 + seq) & 0xFF for i in range(payload_len))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, 5 << 4, 0x18, 502, 0, 0)
    ip = struct.pack("!IHBB", 6 << 28, 20 + payload_len, 6, 64) \
        + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    p = bytearray(ip + tcp + payload)
    p[56:58] = (netpkt.pseudo6(p, 6, 20 + payload_len) % 0xFFFF).to_bytes(2, "big")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV6, 60, MSS, 40, 16))
    return hdr, memoryview(bytes(p))


def valid6(seg) -> bool:
    """Scapy's verdict on a segment's TCP checksum."""
    p = IPv6(bytes(seg))
    del p[TCP].chksum
    return bytes(p) == bytes(seg)


def world(**kw):
    w = World(conf=CONF6, **kw)
    return w, w.add(A1, v2("C1")), w.add(A2, v2("C2"))


def peer(w, cid):
    return next(p for p in w.server.server.peers.values() if p.client_id == cid)


def gso(item):
    assert type(item) is SuperPacket
    return netpkt.parse_vnet(item[0])


# ------------------------------------------------------------ the records


def test_records_of_both_families_are_made_parsed_and_cut():
    h4, p4 = tcp_super("10.0.0.2", "10.0.0.3", 20000)
    h6, p6 = tcp6_super(C1, C2, 20000)
    assert bulk.record_of(h4, p4) == (MSS, p4)
    assert bulk.record_of(h6, p6) == (MSS, p6)
    # A GSO type of the other family is not a record.
    assert bulk.record_of(h4, p6) is None and bulk.record_of(h6, p4) is None
    plain = wire.pack_bulk_records([(MSS, p4), (0, bytes(p6[:40])), (MSS, p6)])
    recs = wire.parse_bulk_records(plain)
    assert [(g, bytes(p)) for g, p in recs] == [(MSS, bytes(p4)), (0, bytes(p6[:40])),
                                                 (MSS, bytes(p6))]
    # The TUN write: one GSO write per family, the vnet header the kernel wants.
    v4, v6 = gso(bulk.tun_items(MSS, p4)[0]), gso(bulk.tun_items(MSS, p6)[0])
    assert (v4.gso_type, v4.hdr_len, v4.csum_start, v4.csum_offset) == (netpkt.GSO_TCPV4, 40, 20, 16)
    assert (v6.gso_type, v6.hdr_len, v6.gso_size, v6.csum_start, v6.csum_offset, v6.flags) == \
        (netpkt.GSO_TCPV6, 60, MSS, 40, 16, netpkt.F_NEEDS_CSUM)
    assert bulk.segment_count(MSS, p6) == -(-20000 // MSS)
    # Cut (a peer on DATA): checksummed segments that give the payload back.
    segs = bulk.segments(MSS, p6)
    assert len(segs) == -(-20000 // MSS) and all(valid6(s) for s in segs)
    assert b"".join(bytes(s[60:]) for s in segs) == bytes(p6[60:])


def test_ipv6_with_extension_headers_or_a_bad_length_is_no_record():
    ext = bytearray(bytes(IPv6(src=C1, dst=C2) / IPv6ExtHdrDestOpt() / TCP(flags="A")
                          / Raw(bytes(3000))))
    h = netpkt.VnetHdr((1, netpkt.GSO_TCPV6, 68, 1000, 48, 16))
    assert bulk.record_of(h, ext) is None
    assert bulk.tun_items(1000, ext) == [] and bulk.segments(1000, ext) == []
    _, p6 = tcp6_super(C1, C2, 5000)
    short = bytearray(p6)
    short[4:6] = (100).to_bytes(2, "big")      # payload length != record length
    assert bulk.tun_items(MSS, short) == [] and bulk.segments(MSS, short) == []
    assert bulk.tun_items(0, b"\x60" + bytes(30)) == []     # a plain record too short for IPv6


# ------------------------------------------------------ through the cores


def test_a_tcp6_super_packet_is_one_frame_and_one_gso_tcpv6_write():
    w, c1, c2 = world()
    h, p = tcp6_super(C1, C2, 60000)
    c1.tun_super(h, p, w.now)
    assert c1.bulk_tx_frames == 1 and not c1.drops
    w.pump()
    assert peer(w, "C1").stats["bulk_rx"] == 1 and peer(w, "C2").stats["bulk_tx"] == 1
    assert c2.bulk_rx_frames == 1
    (item,) = c2.to_tun
    v = gso(item)
    assert (v.gso_type, v.gso_size, v.csum_start, v.csum_offset) == (netpkt.GSO_TCPV6, MSS, 40, 16)
    assert bytes(item[1]) == bytes(p)
    assert c2.rx_packets == -(-60000 // MSS)
    assert set(w.server.drops) <= {"no-key"}     # (the handshakes: one key tried per client)


def test_the_server_tun_sends_a_tcp6_super_packet_whole_by_ipv6_destination():
    w, c1, c2 = world(local_delivery=True)
    h, p = tcp6_super(GW, C1, 30000)
    assert w.server.tun_super(h, p, w.now) is True
    w.pump()
    (item,) = c1.to_tun
    assert gso(item).gso_type == netpkt.GSO_TCPV6 and bytes(item[1]) == bytes(p)
    assert not c2.to_tun
    # Nobody holds the destination: the caller cuts it (tun_super says False).
    assert w.server.tun_super(*tcp6_super(GW, "fd00:c::99", 3000), w.now) is False
    # Its IPv4 twin still goes by the IPv4 destination.
    assert w.server.tun_super(*tcp_super("10.0.0.1", "10.0.0.3", 3000), w.now) is True


def test_a_tcp6_record_for_the_server_tun_or_nobody():
    w, c1, _ = world(local_delivery=True)
    c1.tun_super(*tcp6_super(C1, GW, 9000), w.now)
    w.pump()
    (item,) = w.server.to_tun
    assert gso(item).gso_type == netpkt.GSO_TCPV6
    w, c1, _ = world()
    c1.tun_super(*tcp6_super(C1, "fd00:99::1", 9000), w.now)
    w.pump()
    assert w.server.drops["ipv6-no-route"] == 1 and not w.server.to_tun


def seal_records(c, records, now):
    dgrams = c.session.encrypt_frame(records, now)
    assert dgrams is not None
    return framing.datagrams_of(dgrams)


@pytest.mark.parametrize("g", [0, MSS])
def test_a_spoofed_ipv6_source_inside_a_bulk_frame_is_refused(g, caplog):
    """The frame authenticates (C1's own key) but a record's IPv6 source is
    not C1's: that record is dropped and counted as spoofed, with the
    check single IPv6 packets get; the genuine record of the frame goes on."""
    w, c1, c2 = world()
    h, spoof = tcp6_super("fd00:c::77", C2, 3000)
    _, good = tcp6_super(C1, C2, 3000, seq=9)
    if not g:
        spoof, good = spoof[:200], good[:200]    # plain records (G 0): checksums aside
    for d in seal_records(c1, [(g, spoof), (g, good)], w.now):
        w.entry.datagram_received(d, A1, w.now)
    w.pump()
    st = peer(w, "C1").stats
    assert st["spoofed"] == 1 and w.server.server.stats["spoofed"] == 1
    assert [bytes(x[1] if type(x) is SuperPacket else x) for x in c2.to_tun] == [bytes(good)]
    assert "inner source fd00:c::77" in caplog.text
    # An IPv6 source of another client (C2's own address) is as foreign.
    _, other = tcp6_super(C2, C1, 3000)
    for d in seal_records(c1, [(MSS, other)], w.now):
        w.entry.datagram_received(d, A1, w.now)
    w.pump()
    assert st["spoofed"] == 2 and not c1.to_tun


def test_a_client_without_an_ipv6_address_writes_no_ipv6_record():
    w, c1, _ = world()
    c3 = w.add(A3, v2("L3"))         # IPv4 only
    assert c3.config.address6 is None
    srv_peer = peer(w, "L3")
    pairs = w.server.server.send_frame(srv_peer, [(MSS, tcp6_super(GW, C1, 3000)[1])], w.now)
    for d, _ in pairs:
        for x in framing.datagrams_of((d,)):
            c3.datagram_received(x, w.now)
    assert not c3.to_tun and c3.drops["not-ipv4"] == 1


def test_the_mux_relays_tcp6_records_between_v2_clients_and_never_to_legacy():
    w = World(mux=True, conf=CONF6)
    c1, c2 = w.add(A1, v2("C1")), w.add(A2, v2("C2"))
    c1.tun_super(*tcp6_super(C1, C2, 20000), w.now)
    w.pump()
    assert gso(c2.to_tun[0]).gso_type == netpkt.GSO_TCPV6
    c1.tun_super(*tcp6_super(C1, "::ffff:10.0.0.4", 2000), w.now)
    w.pump()
    assert w.mux.v2.drops["ipv6-no-route"] + w.mux.v2.drops["ipv6-to-legacy"] == 1


def test_many_random_tcp6_super_packets_round_trip():
    w, c1, c2 = world()
    for n in (1, 60, MSS, MSS + 1, 5 * MSS, 60000):
        payload_len = n
        h, p = tcp6_super(C1, C2, payload_len, seq=int.from_bytes(os.urandom(3), "big"))
        c1.tun_super(h, p, w.now)
        w.pump()
        (item,) = c2.to_tun
        c2.to_tun.clear()
        assert bytes(item[1]) == bytes(p)
