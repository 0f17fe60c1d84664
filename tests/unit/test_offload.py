"""Segmentation, merging and checksums of camex.io.offload, checked against
Scapy, which computes its checksums independently (RFC 1071 word sums)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from camex.base import netpkt
from camex.base.contract import PlainReceiver, SuperPacket
from camex.io import offload
from camex.v2 import framing
from tests.support.scapy_check import valid4

SRC, DST = "10.0.0.2", "10.0.0.3"


# Scapy's own verdict: rebuilding the packet with checksums left to Scapy
# gives back the same bytes.
scapy_valid = valid4


def tcp_super(payload: bytes, flags="PA", seq=1000, options=()) -> bytes:
    """What a TSO TUN read returns: one header, all the payload, IP total
    length over everything, and the TCP checksum field holding only the
    pseudo-header sum (NEEDS_CSUM); the last is irrelevant to segment()."""
    p = IP(src=SRC, dst=DST, id=7, flags="DF", ttl=64) / TCP(
        sport=40000, dport=5201, seq=seq, ack=55, flags=flags, window=502,
        options=list(options)) / Raw(payload)
    b = bytearray(bytes(p))
    b[36:38] = b"\x12\x34"  # garbage where the partial sum sits
    return bytes(b)


# ------------------------------------------------------------- checksums


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.sampled_from(["tcp", "udp"]))
def test_l4_checksum_matches_scapy(payload, proto):
    l4 = TCP(sport=1, dport=2, flags="A") if proto == "tcp" else UDP(sport=1, dport=2)
    ref = bytes(IP(src=SRC, dst=DST) / l4 / Raw(payload))
    b = bytearray(ref)
    at = 36 if proto == "tcp" else 26
    b[at:at + 2] = b"\0\0"
    c = netpkt.l4_checksum(b, 20, netpkt.PROTO_TCP if proto == "tcp" else netpkt.PROTO_UDP)
    assert c == int.from_bytes(ref[at:at + 2], "big")
    assert netpkt.l4_valid(ref, 20, ref[9])


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_ip_checksum_matches_scapy(hdr):
    h = bytearray(hdr)
    h[0] = 0x45
    h[10:12] = b"\0\0"
    p = IP(bytes(h))
    del p.chksum
    want = IP(bytes(p)).chksum
    assert netpkt.ip_checksum(h) == want


def test_checksum_zero_and_ffff_cases():
    # Data whose word sum is 0xFFFF: the checksum is 0 (TCP) but UDP must
    # send 0xFFFF, since a UDP checksum of 0 means "none".
    assert netpkt.fold(netpkt.sum16(b"\xff\xff")) == 0
    assert netpkt.fold(netpkt.sum16(b"\x12\x34")) == 0xFFFF - 0x1234
    # Odd length: the last byte is the high half of a word.
    assert netpkt.sum16(b"\x01") == 0x0100


# ---------------------------------------------------------- segmentation


@pytest.mark.parametrize("mss", [1389, 1388, 536, 1])
def test_segment_tcp_like_the_kernel(mss):
    payload = os.urandom(3 * 1389 + 100) if mss > 1 else os.urandom(5)
    sup = tcp_super(payload, flags="FPA",
                    options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 52, mss, 20, 16))
    segs = netpkt.segment(hdr, sup)
    assert len(segs) == -(-len(payload) // mss)
    got = b""
    for i, s in enumerate(segs):
        s = bytes(s)
        assert scapy_valid(s), f"segment {i} has a wrong checksum"
        p = IP(s)
        assert p[IP].id == (7 + i) & 0xFFFF
        assert p[IP].len == len(s)
        assert p[TCP].seq == 1000 + len(got)
        assert p[TCP].options == [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
        last = i == len(segs) - 1
        assert bool(p[TCP].flags.F) == last and bool(p[TCP].flags.P) == last
        assert p[TCP].flags.A
        got += bytes(p[TCP].payload)
    assert got == payload


def test_segment_tcp_cwr_only_on_first():
    sup = tcp_super(os.urandom(3000), flags="CA")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4 | netpkt.GSO_ECN, 40, 1000, 20, 16))
    segs = [IP(bytes(s)) for s in netpkt.segment(hdr, sup)]
    assert [bool(s[TCP].flags.C) for s in segs] == [True, False, False]


def test_segment_udp_uso():
    payload = os.urandom(4000)
    p = IP(src=SRC, dst=DST, id=100) / UDP(sport=9, dport=10) / Raw(payload)
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_UDP_L4, 28, 1472, 20, 6))
    segs = [bytes(s) for s in netpkt.segment(hdr, bytes(p))]
    assert [len(s) - 28 for s in segs] == [1472, 1472, 1056]
    assert all(scapy_valid(s) for s in segs)
    assert b"".join(s[28:] for s in segs) == payload
    assert [IP(s)[UDP].len for s in segs] == [1480, 1480, 1064]


def test_segment_completes_a_partial_checksum():
    ref = bytes(IP(src=SRC, dst=DST) / UDP(sport=5, dport=6) / Raw(b"hello, world!"))
    b = bytearray(ref)
    # The field holds the folded pseudo-header sum, as the kernel leaves it.
    ps = netpkt.pseudo4(b, 17, len(b) - 20) % 0xFFFF
    b[26:28] = ps.to_bytes(2, "big")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_NONE, 0, 0, 20, 6))
    (out,) = netpkt.segment(hdr, bytes(b))
    assert bytes(out) == ref


def test_segment_rejects_what_it_cannot_cut():
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, 1000, 20, 16))
    with pytest.raises(netpkt.OffloadError):
        netpkt.segment(hdr, b"\x60" + bytes(60))  # IPv6
    bad = bytearray(tcp_super(os.urandom(100)))
    bad[2:4] = (5000).to_bytes(2, "big")  # total length beyond the data
    with pytest.raises(netpkt.OffloadError):
        netpkt.segment(hdr, bytes(bad))
    with pytest.raises(netpkt.OffloadError):
        netpkt.segment(netpkt.VnetHdr((0, 99, 0, 0, 0, 0)), tcp_super(b"x"))


# -------------------------------------------------------------- merging


def train(n=5, mss=1389, last=700, seq=5000, flags_last="A"):
    pays = [os.urandom(mss) for _ in range(n - 1)] + [os.urandom(last)]
    out, s = [], seq
    for i, pay in enumerate(pays):
        f = flags_last if i == n - 1 else "A"
        out.append(bytes(IP(src=SRC, dst=DST, id=i, flags="DF") / TCP(
            sport=40000, dport=5201, seq=s, ack=9, flags=f, window=500,
            options=[("NOP", None), ("NOP", None), ("Timestamp", (11, 22))]) / Raw(pay)))
        s += len(pay)
    return out, b"".join(pays)


def merged_packet(bufs) -> bytes:
    return b"".join(bytes(b) for b in bufs)


@pytest.mark.parametrize("mss", [1389, 1388])
def test_coalesce_merges_a_train_with_a_valid_checksum(mss):
    pkts, payload = train(mss=mss, flags_last="PA")
    writes = list(netpkt.coalesce(pkts))
    assert len(writes) == 1
    vnet, bufs = writes[0]
    h = netpkt.parse_vnet(vnet)
    assert (h.gso_type, h.gso_size, h.hdr_len) == (netpkt.GSO_TCPV4, mss, 52)
    # No "checksum valid" flag: the kernel verifies the merged packet.
    assert h.flags == 0
    m = merged_packet(bufs)
    assert scapy_valid(m)
    p = IP(m)
    assert bytes(p[TCP].payload) == payload
    assert p[TCP].seq == 5000 and p[TCP].flags == "PA" and p[IP].len == len(m)


def test_coalesce_merged_checksum_exposes_a_corrupt_segment():
    pkts, _ = train()
    bad = bytearray(pkts[2])
    bad[100] ^= 0x40  # payload bit flip, checksum field left as it was
    pkts[2] = bytes(bad)
    (vnet, bufs), = list(netpkt.coalesce(pkts))
    assert not scapy_valid(merged_packet(bufs))


def test_coalesce_keeps_apart_what_must_not_merge():
    pkts, _ = train(n=4, last=1389)
    gap = list(pkts)
    gap.pop(1)  # a hole in the sequence
    writes = list(netpkt.coalesce(gap))
    assert [netpkt.parse_vnet(v).gso_type for v, _ in writes] == [netpkt.GSO_NONE, netpkt.GSO_TCPV4]
    other_flow = bytearray(pkts[1])
    other_flow[22:24] = (5202).to_bytes(2, "big")
    writes = list(netpkt.coalesce([pkts[0], bytes(other_flow)]))
    assert [netpkt.parse_vnet(v).gso_type for v, _ in writes] == [netpkt.GSO_NONE] * 2
    push_first = train(n=3, flags_last="A")[0]
    p0 = bytearray(push_first[0])
    p0[33] |= netpkt.TCP_PSH
    writes = list(netpkt.coalesce([bytes(p0)] + push_first[1:]))
    assert netpkt.parse_vnet(writes[0][0]).gso_type == netpkt.GSO_NONE
    assert len(writes) == 2  # the other two merge
    udp = bytes(IP(src=SRC, dst=DST) / UDP(sport=1) / Raw(b"x" * 100))
    udp2 = bytes(IP(src=SRC, dst=DST) / UDP(sport=2) / Raw(b"x" * 100))
    writes = list(netpkt.coalesce([udp, udp2]))  # two flows: not merged
    assert [merged_packet(b) for _, b in writes] == [udp, udp2]


def test_coalesce_in_order_of_arrival():
    pkts, _ = train(n=3, last=1389)
    udp = bytes(IP(src=SRC, dst=DST) / UDP() / Raw(b"y"))
    seq = [udp] + pkts + [udp]
    writes = list(netpkt.coalesce(seq))
    assert len(writes) == 3
    assert merged_packet(writes[0][1]) == udp and merged_packet(writes[2][1]) == udp


def test_segment_then_coalesce_gives_back_the_super_packet():
    payload = os.urandom(40 * 1389 + 3)
    sup = tcp_super(payload, flags="A")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, 1389, 20, 16))
    (vnet, bufs), = list(netpkt.coalesce(netpkt.segment(hdr, sup)))
    m = merged_packet(bufs)
    assert scapy_valid(m) and m[40:] == payload


# ------------------------------------------------------------ vnet + runs


def test_vnet_header_roundtrip():
    b = netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 52, 1389, 20, 16)
    assert len(b) == 10
    h = netpkt.parse_vnet(b + b"payload")
    assert (h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start, h.csum_offset) == (
        1, 1, 52, 1389, 20, 16)
    with pytest.raises(ValueError):
        netpkt.parse_vnet(b"\0" * 9)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1, 52, 1400, 1429, 1472]), max_size=200))
def test_runs_are_gso_sendable_and_keep_order(sizes):
    ds = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    flat = []
    for size, run in framing.runs(ds):
        assert 1 <= len(run) <= framing.MAX_SEGMENTS
        assert sum(map(len, run)) <= framing.MAX_GSO_BYTES
        assert all(len(d) == size for d in run[:-1]) and 0 < len(run[-1]) <= size
        flat += run
    assert flat == ds


# ------------------------------------------------ frames over datagrams


def test_cut_frame_and_reassemble_in_any_order():
    body = os.urandom(60000)
    head = bytes([0xC2, 6, 0, 0]) + bytes(16)
    ds = framing.cut_frame(head, body, 1472)
    assert len(ds) == -(-60000 // 1452)
    assert all(len(d) == 1472 for d in ds[:-1]) and len(ds[-1]) <= 1472
    assert [d[3] for d in ds] == list(range(len(ds)))
    (size, run), = list(framing.runs(ds))  # one GSO send
    r = framing.Reassembly()
    order = list(range(len(ds)))
    order = order[1::2] + order[0::2]
    out = None
    for k, i in enumerate(order):
        out = r.add(("peer", 7), ds[i][3], len(ds), ds[i][20:], now=0.0)
        assert (out is None) == (k < len(order) - 1)
    assert out == body and not r.slots


def test_reassembly_bounds_and_mismatches():
    r = framing.Reassembly(max_slots=2, timeout=1.0)
    assert r.add("a", 0, 3, b"x", 0.0) is None
    assert r.add("b", 0, 3, b"x", 0.0) is None
    assert r.add("c", 0, 3, b"x", 0.1) is None  # evicts "a", the oldest
    assert set(r.slots) == {"b", "c"} and r.dropped == 1
    assert r.add("b", 1, 4, b"y", 0.2) is None  # another count: not the same frame
    assert r.slots["b"][1] == 4
    assert r.add("c", 1, 3, b"y", 5.0) is None  # too old: starts again
    assert r.slots["c"][3] == 1
    assert r.add("d", 3, 3, b"z", 5.0) is None and "d" not in r.slots  # index out of range
    assert r.add("e", 0, 1, b"whole", 5.0) == b"whole"
    with pytest.raises(ValueError):
        framing.cut_frame(bytes(20), bytes(65 * 1452), 1472)


# ---------------------------------------- devices (over a socket pair)


def _device(cls):
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(1)
    if cls is offload.OffloadTun:
        dev = cls(os.dup(ours.fileno()), "t0", "test", False)
    else:
        dev = cls(os.dup(ours.fileno()), "t0", "test")
    ours.close()
    return dev, theirs


def test_plain_device_cuts_super_packet_items():
    dev, peer = _device(offload.BatchTun)
    payload = os.urandom(2500)
    sup = tcp_super(payload, flags="A")
    vnet = netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, 1000, 20, 16)
    small = bytes(IP(src=SRC, dst=DST) / UDP() / Raw(b"q"))
    dev.write_batch([small, SuperPacket(vnet, sup), small])
    got = [peer.recv(70000) for _ in range(5)]
    assert got[0] == small and got[-1] == small
    assert [len(g) - 40 for g in got[1:4]] == [1000, 1000, 500]
    assert all(scapy_valid(g) for g in got[1:4])
    dev.close()


def test_offload_device_writes_pairs_whole_and_merges_the_rest():
    dev, peer = _device(offload.OffloadTun)
    pkts, payload = train(n=3, last=1389)
    sup = tcp_super(os.urandom(3000), flags="A")
    vnet = netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, 1000, 20, 16)
    dev.write_batch(pkts + [SuperPacket(vnet, sup)] + pkts)
    msgs = [peer.recv(70000) for _ in range(3)]
    h = [netpkt.parse_vnet(m) for m in msgs]
    assert [x.gso_type for x in h] == [netpkt.GSO_TCPV4] * 3
    assert msgs[1] == vnet + sup  # the pair, untouched
    assert msgs[0][10:] == msgs[2][10:] and scapy_valid(msgs[0][10:])
    dev.close()


def test_a_read_with_a_checksum_left_to_us_comes_back_complete():
    """With TSO on, the kernel leaves the L4 checksum of every small packet
    to the TUN's reader (NEEDS_CSUM, no GSO type): read_items hands it on
    with the checksum done, as netpkt.segment does; one whose checksum
    field lies beyond its end is dropped and counted."""
    dev, peer = _device(offload.OffloadTun)
    ack = bytes(IP(src=SRC, dst=DST, flags="DF") / TCP(sport=5201, dport=40000, flags="A",
                                                       seq=9, ack=1000, window=502))
    partial = bytearray(ack)
    partial[36:38] = (netpkt.pseudo4(partial, 6, len(partial) - 20) % 0xFFFF).to_bytes(2, "big")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_NONE, 0, 0, 20, 16))
    try:
        peer.send(netpkt.pack_vnet(*hdr) + bytes(partial))
        (got,) = dev.read_items()
        assert bytes(got) == ack and scapy_valid(bytes(got))
        assert [bytes(x) for x in netpkt.segment(hdr, bytes(partial))] == [ack]
        peer.send(netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, 0, 0, 0, 20, 19) + bytes(partial)[:40])
        assert dev.read_items() == [] and dev.errors == 1
    finally:
        dev.close()


def test_coalesce_merges_small_udp_of_one_flow_only():
    def dg(i, n=36, sport=5, corrupt=False):
        b = bytearray(bytes(IP(src=SRC, dst=DST, id=i) / UDP(sport=sport, dport=6)
                            / Raw(bytes([i]) * n)))
        if corrupt:
            b[-1] ^= 1
        return bytes(b)
    seq = [dg(0), dg(1), dg(2, n=10), dg(3), dg(4, sport=9), dg(5, corrupt=True), dg(6),
           dg(7, n=400), dg(8, n=400)]
    writes = list(netpkt.coalesce(seq))
    kinds = [(netpkt.parse_vnet(v).gso_type, len(b)) for v, b in writes]
    # 0,1 and the shorter 2 merge; 3 alone (next is another flow); 4 alone;
    # the corrupt 5 alone; 6 alone; datagrams over MAX_UDP_MERGE are not merged.
    assert kinds == [(netpkt.GSO_UDP_L4, 4), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]
    vnet, bufs = writes[0]
    segs = netpkt.segment(netpkt.parse_vnet(vnet), merged_packet(bufs))
    assert [bytes(s)[28:] for s in segs] == [d[28:] for d in seq[:3]]
    assert all(scapy_valid(bytes(s)) for s in segs)
    assert list(netpkt.coalesce(seq, udp=False))[0][1] == [seq[0]]


# ------------------------------------------ udp.receive: lone datagram or burst


class _Queue:
    """recv() over a list of (datagrams, address) results; BlockingIOError
    when empty, like a non-blocking socket; exceptions in the list are raised."""

    def __init__(self, items):
        self.items = list(items)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if not self.items:
            raise BlockingIOError
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def _receive(queue, burst, flush_at=3, on_error=lambda e: True):
    from camex.io import udp

    got, flushed, pending = [], [], []

    def deliver(d, addr, now):
        pending.append(d)
        got.append((d, addr, now))

    def flush():
        flushed.append(list(pending))
        pending.clear()

    udp.receive(queue, PlainReceiver(deliver), True, 5.0, burst, lambda: len(pending), flush_at,
                flush, on_error)
    return got, flushed


def test_lone_datagram_is_received_once_and_flushed_at_once():
    q = _Queue([(b"a", 0, ("h", 1)), (b"b", 0, ("h", 1))])
    got, flushed = _receive(q, burst=False)
    # One receive, no second one to find the queue empty: the rest waits
    # for the next (level-triggered) readiness event.
    assert q.calls == 1
    assert got == [(b"a", ("h", 1), 5.0)] and flushed == [[b"a"]]
    got, flushed = _receive(q, burst=False)
    assert got == [(b"b", ("h", 1), 5.0)] and flushed == [[b"b"]]


def test_burst_is_drained_with_flushes_every_flush_at():
    q = _Queue([(b"%d" % i, 0, ("h", 1)) for i in range(7)])
    got, flushed = _receive(q, burst=True)
    assert [g[0] for g in got] == [b"%d" % i for i in range(7)]
    assert flushed == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]
    assert q.calls == 8  # the last one found the queue empty


def test_receive_errors_go_on_or_stop_as_the_daemon_says():
    errors = []

    def go_on(e):
        errors.append(e)
        return True

    q = _Queue([ConnectionRefusedError(), (b"xy", 1, ("h", 2))])  # a GRO batch
    got, flushed = _receive(q, burst=False, on_error=go_on)
    assert [g[0] for g in got] == [b"x", b"y"] and flushed == [[b"x", b"y"]]
    assert len(errors) == 1
    q = _Queue([OSError(5, "EIO"), (b"z", 0, ("h", 2))])
    got, flushed = _receive(q, burst=True, on_error=lambda e: False)
    assert got == [] and flushed == [[]] and q.items == [(b"z", 0, ("h", 2))]


def test_a_fault_on_one_datagram_costs_that_receive_not_the_daemon(caplog, monkeypatch):
    """Every refusal of bad input is counted, never raised; should handling
    a datagram raise anyway (a bug), the daemon logs one warning per kind
    of fault, saying where, and keeps receiving."""
    from camex.base import log
    from camex.io import udp

    monkeypatch.setattr(log, "_FAULTS", log.Throttle(rate=1, burst=5))  # this test's own

    got = []

    def deliver(d, addr, now):
        if d == b"boom":
            raise IndexError("index out of range")
        got.append(d)

    q = _Queue([(b"a", 0, ("h", 1))] + [(b"boomlost", 4, ("h", 2))] * 5 +
               [(b"b", 0, ("h", 3))])
    with caplog.at_level("WARNING", logger="camex"):
        udp.receive(q, PlainReceiver(deliver), True, 5.0, True, lambda: 0, 99, lambda: None,
                    lambda e: True)
    assert got == [b"a", b"b"]          # the rest of a faulty receive is dropped
    faults = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(faults) == 1 and "IndexError: index out of range at " in faults[0]
    assert "test_offload.py:" in faults[0] and "from h:2:" in faults[0]
