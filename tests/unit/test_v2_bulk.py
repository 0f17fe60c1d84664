"""v2 BULK frames through the real cores, in memory (docs/PROTOCOL.md §4.7):
negotiation, one frame per super-packet, delivery as a GSO TUN write,
reassembly out of order, loss, replay, tampering, limits, and the relay to
v2 clients with and without BULK and to legacy clients."""

import pytest

from camex.base import netpkt
from camex.base.contract import SuperPacket
from camex.legacy.client import LegacyClient
from camex.legacy import codec
from camex.v2 import bulk, framing, wire
from camex.v2.server import FRAME_SLOTS, FRAME_SLOTS_PER_SESSION
from tests.support.v2_bulk_world import A1, A2, A3, MSS, PW, World, frame, tcp_super, v2


def tcp_payload(segments):
    """Payload bytes of complete TCP segments, after checking each one's
    IP and TCP checksums (what a receiving kernel would do)."""
    out = b""
    for s in segments:
        s = bytes(s)
        assert netpkt.sum16(s[:20]) % 0xFFFF == 0, "IP checksum"
        assert netpkt.l4_valid(s, 20, 6), "TCP checksum"
        assert len(s) - 40 <= MSS
        out += s[40:]
    return out


def peer(w, cid):
    return w.server.server.peers[cid.lower()]


# ------------------------------------------------------------ negotiation


def test_both_sides_announce_bulk_and_a_super_packet_is_one_frame():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    assert c1.bulk_ready and peer(w, "C1").bulk and w.server.bulk_ready
    hdr, pkt = tcp_super("10.0.0.2", "10.0.0.1", 60000)
    c1.tun_super(hdr, pkt, w.now)
    # Glued: one buffer for the whole frame, cut by the kernel's UDP GSO.
    assert [type(d) for d in c1.to_net] == [framing.Run]
    frags = framing.datagrams_of(c1.to_net)
    assert all(wire.msg_type(d) == wire.T_BULK for d in frags)
    assert len(frags) == -(-(60000 + 40 + 4 + 16) // (1472 - 20))
    assert all(len(d) == 1472 for d in frags[:-1])
    assert len({wire.parse_bulk(d)[3] for d in frags}) == 1      # one counter: one AEAD
    w.pump()
    (item,) = w.server.to_tun
    vnet, got = item
    assert bytes(got) == bytes(pkt)
    assert netpkt.parse_vnet(vnet) == (netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, MSS, 20, 16)
    # What the kernel makes of that write: segments with valid checksums.
    assert tcp_payload(netpkt.segment(netpkt.parse_vnet(vnet), got)) == bytes(pkt[40:])
    assert c1.bulk_tx_frames == 1 and peer(w, "C1").stats["bulk_rx"] == 1
    assert peer(w, "C1").stats["rx"] == -(-60000 // MSS)


def test_client_without_bulk_gets_the_old_resp_and_only_data(monkeypatch):
    w = World(local_delivery=True)
    old = w.add(A1, v2("C1", monkeypatch, bulk_on=False))
    assert old.session.request.features == 0
    assert not old.bulk_ready and not peer(w, "C1").bulk and not w.server.bulk_ready
    # The server answered without TLV_FEATURES, so its RESP is what an
    # older client always got, and it never sends BULK to it.
    hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 10000)
    assert w.server.tun_super(hdr, pkt) is False
    assert w.server.server.send_frame(peer(w, "C1"), [(MSS, pkt)], w.now) is None
    # Super-packets the daemon still hands over go out cut, as DATA.
    old.tun_super(hdr, pkt, w.now)
    assert old.to_net and all(wire.msg_type(d) == wire.T_DATA for d in old.to_net)


def test_server_without_bulk_gets_no_bulk_from_clients(monkeypatch):
    monkeypatch.setenv("CAMEX_FASTPATH", "nobulk")
    w = World(local_delivery=True)
    monkeypatch.delenv("CAMEX_FASTPATH")
    c1 = w.add(A1, v2("C1"))
    assert c1.session.request.features == wire.FEATURE_BULK
    assert not c1.session.peer_bulk and not c1.bulk_ready
    hdr, pkt = tcp_super("10.0.0.2", "10.0.0.1", 8000)
    c1.tun_super(hdr, pkt, w.now)
    assert all(wire.msg_type(d) == wire.T_DATA for d in c1.to_net)
    w.pump()
    assert tcp_payload(w.server.to_tun) == bytes(pkt[40:])


def test_old_server_ignores_the_features_tlv():
    """A v2 implementation that does not know TLV 7 skips it (unknown TLVs
    are ignored): the request decodes as before."""
    req = wire.Request(auto=True, features=wire.FEATURE_BULK)
    data = wire.encode_request(req)
    assert data == wire.encode_request(wire.Request(auto=True)) + bytes((7, 1, 1))
    assert wire.decode_request(data).auto is True
    assert wire.decode_config(wire.encode_config(None, features=1)).features == 1


# --------------------------------------------------------- receive side


def test_fragments_out_of_order_still_make_the_frame():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 30000)
    frags = frame(c1, hp)
    order = frags[1::2] + frags[0::2]
    for d in order:
        w.server.datagram_received(d, A1, w.now)
    ((_, got),) = w.server.to_tun
    assert bytes(got) == bytes(hp[1])


def test_a_lost_fragment_loses_its_frame_only():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    f1 = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 20000, seq=1))
    f2 = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 20000, seq=20001))
    for d in f1[:3] + f1[4:] + f2:
        w.server.datagram_received(d, A1, w.now)
    ((_, got),) = w.server.to_tun
    assert bytes(got[24:28]) == (20001).to_bytes(4, "big")    # the second frame
    # The half frame's slot goes after the timeout; nothing else is kept.
    w.now += 2
    f3 = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 20000, seq=40001))
    for d in f3:
        w.server.datagram_received(d, A1, w.now)
    assert len(w.server.to_tun) == 2 and w.server.server.frames.memory() <= 20000


def test_a_replayed_frame_is_dropped_before_reassembly():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 10000))
    for d in f + f:
        w.server.datagram_received(d, A1, w.now)
    assert len(w.server.to_tun) == 1
    assert w.server.server.stats["replay"] == len(f)
    assert not w.server.server.frames.slots


@pytest.mark.parametrize("field", ["index", "count", "counter", "flags", "slice"])
def test_tampered_fragments_fail_and_do_not_move_the_window(field):
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 10000))
    bad = [bytearray(d) for d in f]
    if field == "index":
        bad[0][3], bad[1][3] = 1, 0
    elif field == "count":
        for d in bad:
            d[16] += 1
        bad.append(bytearray(bad[-1]))     # a made-up last fragment
        bad[-1][3] = bad[-1][16] - 1
    elif field == "counter":
        for d in bad:
            d[12] ^= 1           # far ahead: fresh, so it reaches the AEAD
    elif field == "flags":
        for d in bad:
            d[2] = wire.FLAG_CLOSE
    else:
        bad[1][200] ^= 0x40
    for d in bad:
        w.server.datagram_received(bytes(d), A1, w.now)
    assert w.server.to_tun == [] and w.server.server.stats["forged"] == 1
    assert peer(w, "C1").current is not None          # a forged CLOSE closed nothing
    for d in f:                                        # the genuine frame still opens
        w.server.datagram_received(d, A1, w.now)
    assert len(w.server.to_tun) == 1


@pytest.mark.parametrize("where", ["first", "middle", "last", "all-but-first"])
@pytest.mark.parametrize("gro", [False, True])
def test_a_forged_fragment_sent_ahead_does_not_spoil_the_frame(where, gro):
    """Fragments are not authenticated, frames are: someone who sees a
    session's index and counters can send a fragment of the next frame
    before its sender does. The genuine fragments replace it, the frame
    opens once and nothing else is delivered."""
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 30000)
    f = frame(c1, hp)
    n = len(f)
    pick = {"first": [0], "middle": [n // 2], "last": [n - 1],
            "all-but-first": list(range(1, n))}[where]
    for i in pick:
        bad = bytearray(f[i])
        bad[40] ^= 0xFF
        w.server.datagram_received(bytes(bad), ("203.0.113.5", 999), w.now)
    if gro:
        w.server.datagram_received.many(f, A1, w.now)
    else:
        for d in f:
            w.server.datagram_received(d, A1, w.now)
    got = [x for x in w.server.to_tun if type(x) is SuperPacket]
    if where == "all-but-first":
        # The first genuine fragment completes a frame of forgeries; the
        # next genuine ones mend it MEND_TRIES times, then it is given up.
        assert got == [] and w.server.server.stats["forged"] == 1 + framing.Reassembly.MEND_TRIES
    else:
        assert [bytes(x[1]) for x in got] == [bytes(hp[1])]
    assert len(w.server.server.frames.slots) <= FRAME_SLOTS_PER_SESSION
    assert peer(w, "C1").endpoint == A1


def test_malformed_fragments_are_counted_and_dropped():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    d = bytearray(frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 3000))[0])
    for at, v in ((16, 0), (16, 65), (17, 1), (3, 9)):
        x = bytearray(d)
        x[at] = v
        w.server.datagram_received(bytes(x), A1, w.now)
    w.server.datagram_received(bytes(d[:20]), A1, w.now)
    assert w.server.server.stats["malformed"] == 5 and not w.server.server.frames.slots


def test_reassembly_is_bounded_per_session_and_in_total():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    frames = w.server.server.frames
    # Many incomplete frames (the last fragment of each lost), from two
    # sessions: each keeps at most FRAME_SLOTS_PER_SESSION open.
    for i in range(40):
        for c, a, src in ((c1, A1, "10.0.0.2"), (c2, A2, "10.0.0.3")):
            f = frame(c, tcp_super(src, "10.0.0.1", 60000, seq=i))
            for d in f[:-1]:
                w.server.datagram_received(d, a, w.now)
    assert len(frames.slots) <= 2 * FRAME_SLOTS_PER_SESSION <= FRAME_SLOTS
    assert max(frames.groups.values()) <= FRAME_SLOTS_PER_SESSION
    assert frames.memory() <= 2 * FRAME_SLOTS_PER_SESSION * 64 * 1472
    assert w.server.to_tun == []
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 60000, seq=99))
    for d in f:
        w.server.datagram_received(d, A1, w.now)
    assert len(w.server.to_tun) == 1


def test_a_frame_moves_the_endpoint_only_when_it_authenticates():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    new = ("198.51.100.7", 5555)
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 5000))
    forged = bytearray(f[-1])
    forged[-1] ^= 1
    for d in f[:-1] + [bytes(forged)]:
        w.server.datagram_received(d, new, w.now)
    assert peer(w, "C1").endpoint == A1
    for d in f:
        w.server.datagram_received(d, new, w.now)
    assert peer(w, "C1").endpoint == new


def test_server_sends_frames_to_the_client_and_the_client_writes_gso():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 64000)
    assert w.server.tun_super(hdr, pkt) is True
    w.pump()
    ((vnet, got),) = c1.to_tun
    assert bytes(got) == bytes(pkt) and netpkt.parse_vnet(vnet)[1] == netpkt.GSO_TCPV4
    assert c1.bulk_rx_frames == 1 and c1.rx_bytes == len(pkt)


def test_the_client_takes_a_whole_frame_read_uncut_and_refuses_its_replay():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 50000)
    assert w.server.tun_super(hdr, pkt) is True
    ((run, addr),) = w.server.outbox
    w.server.outbox.clear()
    assert addr == A1 and type(run) is framing.Run
    for _ in range(2):
        assert c1.datagram_received.whole(bytes(run.buf), run.size, w.now)
    ((vnet, got),) = c1.to_tun
    assert bytes(got) == bytes(pkt) and c1.bulk_rx_frames == 1
    assert c1.session.stats["replay"] == 1 and not c1.session.frames.slots


# ------------------------------------------------------------------ relay


def test_relay_v2_to_v2_decrypts_once_and_seals_once():
    w = World()
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    hp = tcp_super("10.0.0.2", "10.0.0.3", 50000)
    c1.tun_super(*hp, w.now)
    w.pump()
    ((vnet, got),) = c2.to_tun
    assert bytes(got) == bytes(hp[1])
    st = w.server.server.stats
    assert (st["bulk_rx"], st["bulk_tx"]) == (1, 1)
    assert peer(w, "C2").stats["bulk_tx"] == 1


def test_relay_to_a_v2_client_without_bulk_cuts_into_data(monkeypatch):
    w = World()
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2", monkeypatch, bulk_on=False))
    hp = tcp_super("10.0.0.2", "10.0.0.3", 30000)
    c1.tun_super(*hp, w.now)
    sent = []
    w.drop = lambda d, addr: sent.append(d) and False
    w.pump()
    assert tcp_payload(c2.to_tun) == bytes(hp[1][40:])
    assert len(c2.to_tun) == -(-30000 // MSS)
    assert w.server.server.stats["bulk_tx"] == 0


def test_relay_to_a_legacy_client_gets_one_checksummed_packet_per_datagram():
    w = World(mux=True)
    c1 = w.add(A1, v2("C1"))
    lg = w.add(A3, LegacyClient(auto=True, client_id="L3", key=codec.derive_key(PW)))
    assert str(lg.config.address) == "10.0.0.4/24"
    hp = tcp_super("10.0.0.2", "10.0.0.4", 20000)
    c1.tun_super(*hp, w.now)
    w.pump()
    assert tcp_payload(lg.to_tun) == bytes(hp[1][40:])
    assert len(lg.to_tun) == -(-20000 // MSS)


def test_the_mux_relays_a_whole_frame_read_whole_to_the_other_client():
    """The daemon's way: c1's flat frame path seals a TCP super-packet, one
    GRO read hands the server the whole frame, the server (both protocols:
    the mux, whose halves share one outbox) seals it again whole for c2,
    and c2's one read takes it whole: the same super-packet on its TUN."""
    w = World(mux=True)
    c1, c2 = w.add(A1, v2("C1")), w.add(A2, v2("C2"))
    hp = tcp_super("10.0.0.2", "10.0.0.3", 30000)
    assert c1.tun_frame(*hp, w.now)
    (run,) = c1.to_net
    c1.to_net.clear()
    assert w.mux.datagram_received.whole(bytes(run.buf), run.size, A1, w.now)
    ((relayed, addr),) = w.mux.outbox
    assert addr == A2 and type(relayed) is framing.Run
    w.mux.outbox.clear()
    assert c2.datagram_received.whole(bytes(relayed.buf), relayed.size, w.now)
    ((vnet, got),) = c2.to_tun
    assert bytes(got) == bytes(hp[1]) and netpkt.parse_vnet(vnet).gso_size == MSS
    assert w.server.server.stats["bulk_tx"] == 1 and c2.session.stats["bulk_rx"] == 1


def test_mux_server_tun_super_packet_to_legacy_is_cut():
    w = World(mux=True)
    lg = w.add(A3, LegacyClient(auto=True, client_id="L3", key=codec.derive_key(PW)))
    hp = tcp_super("10.0.0.1", "10.0.0.4", 9000)
    w.mux.tun_super(*hp, w.now)
    w.pump()
    assert tcp_payload(lg.to_tun) == bytes(hp[1][40:])


def test_bad_records_are_dropped_not_written():
    assert bulk.tun_items(MSS, b"\x45" + bytes(100)) == []            # length mismatch
    assert bulk.tun_items(0, b"\x60" + bytes(38)) == []                # short of an IPv6 header
    assert bulk.tun_items(0, b"\x50" + bytes(39)) == []                # neither IPv4 nor IPv6
    assert bulk.tun_items(MSS, b"\x60" + bytes(100)) == []            # IPv6, length mismatch
    hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 3000)
    assert bulk.record_of(netpkt.VnetHdr((0, netpkt.GSO_NONE, 0, 0, 0, 0)), pkt) is None


def test_a_frame_with_records_for_two_destinations_is_split_by_destination():
    w = World(mux=True)
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    lg = w.add(A3, LegacyClient(auto=True, client_id="L3", key=codec.derive_key(PW)))
    to_c2 = tcp_super("10.0.0.2", "10.0.0.3", 9000)
    to_lg = tcp_super("10.0.0.2", "10.0.0.4", 5000)
    spoof = tcp_super("10.9.9.9", "10.0.0.3", 3000)        # not C1's address: dropped
    c1.to_net.extend(c1.session.encrypt_frame(
        [(MSS, to_c2[1]), (MSS, to_lg[1]), (MSS, spoof[1])], w.now))
    w.pump()
    ((_, got),) = c2.to_tun
    assert bytes(got) == bytes(to_c2[1])
    assert tcp_payload(lg.to_tun) == bytes(to_lg[1][40:])
    assert peer(w, "C1").stats["spoofed"] == 1


def test_a_client_whose_tun_has_no_offloads_can_ask_for_data_only():
    w = World(local_delivery=True)
    c1 = v2("C1")
    c1.accept_bulk(False)          # what a daemon on camex.ko would say
    w.add(A1, c1)
    assert not peer(w, "C1").bulk and not c1.bulk_ready
    hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 5000)
    assert w.server.tun_super(hdr, pkt) is False    # the server cuts it for DATA


# ------------------------------------------------ one receive, many datagrams


def test_a_gro_batch_of_whole_frames_is_taken_in_one_call():
    w = World(mux=True)
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    frames = [frame(c1, tcp_super("10.0.0.2", "10.0.0.3", 30000, seq=s)) for s in (1, 30001)]
    batch = [memoryview(b"".join(frames[0] + frames[1]))[i:i + len(d)]
             for i, d in zip(_offsets(frames[0] + frames[1]), frames[0] + frames[1])]
    w.entry.datagram_received.many(batch, A1, w.now)
    w.pump()
    assert [bytes(p[24:28]) for _, p in c2.to_tun] == [(1).to_bytes(4, "big"),
                                                     (30001).to_bytes(4, "big")]
    # The same batch again: replays, refused; nothing held.
    w.entry.datagram_received.many(batch, A1, w.now)
    w.pump()
    assert len(c2.to_tun) == 2 and w.server.server.stats["replay"] >= 2
    assert not w.server.server.frames.slots


def _offsets(ds):
    at, out = 0, []
    for d in ds:
        out.append(at)
        at += len(d)
    return out


@pytest.mark.parametrize("change", ["swap", "duplicate", "split", "data-between", "bad-last",
                                    "gso-sends"])
def test_batches_that_are_not_one_clean_frame_go_fragment_by_fragment(change):
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 65400 if change == "gso-sends" else 30000)
    f = frame(c1, hp)
    if change == "gso-sends":
        # 46 fragments are two GSO sends (65,507 bytes at most each): two
        # GRO batches at the receiver, the first one without the last fragment.
        batches = [run for _, run in framing.runs(f)]
        assert [len(b) for b in batches] == [44, 2]
    elif change == "swap":
        batches = [[f[0], f[2], f[1]] + f[3:]]
    elif change == "duplicate":
        batches = [f[:5] + [f[4]] + f[5:]]
    elif change == "split":
        batches = [f[:7], f[7:]]
    elif change == "data-between":
        c1.tun_packet(tcp_super("10.0.0.2", "10.0.0.1", 100)[1].tobytes()[:140], w.now)
        data = c1.to_net.pop()
        batches = [f[:3] + [data] + f[3:]]
    else:
        bad = bytearray(f[-1])
        bad[2] = wire.FLAG_CLOSE          # the last header disagrees with the first
        batches = [f[:-1] + [bytes(bad)], [f[-1]]]
    for b in batches:
        w.server.datagram_received.many(b, A1, w.now)
    frames_out = [x for x in w.server.to_tun if type(x) is SuperPacket]
    if change == "bad-last":
        # A last fragment with other flags is not part of the frame (the
        # flags are in its AD): it waits in a slot of its own, and the
        # genuine last fragment completes the frame; nothing closes.
        assert len(frames_out) == 1 and bytes(frames_out[0][1]) == bytes(hp[1])
        assert w.server.server.stats["forged"] == 0 and peer(w, "C1").current is not None
    else:
        assert len(frames_out) == 1 and bytes(frames_out[0][1]) == bytes(hp[1])
    assert peer(w, "C1").current is not None


def test_frames_carried_are_not_reported_as_drops():
    """`camex status` lists drops: frames relayed whole are traffic, a
    forged fragment is a drop."""
    w = World(mux=True)
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    before = w.mux.drops()
    hp = tcp_super("10.0.0.2", "10.0.0.3", 50000)
    c1.tun_super(*hp, w.now)
    w.pump()
    assert len(c2.to_tun) == 1 and w.server.server.stats["bulk_tx"] == 1
    assert w.mux.drops() == before
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.3", 5000))
    bad = bytearray(f[-1])
    bad[-1] ^= 1
    for d in f[:-1] + [bytes(bad)]:
        w.mux.datagram_received(d, A1, w.now)
    assert w.mux.drops() == {**before, "v2-forged": 1}


# ------------------------------------------- a GRO read that is one frame


def gro_read(entry, f, addr, now):
    """What camex.io.udp.receive does with one GRO read of `f` (the
    datagrams of one GSO send): offer it uncut, else split it."""
    data, size = b"".join(f), len(f[0])
    if entry.datagram_received.whole(data, size, addr, now):
        return True
    entry.datagram_received.many(framing.split(data, size), addr, now)
    return False


def test_a_gro_read_of_one_whole_frame_is_taken_uncut():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 30000)
    f = frame(c1, hp)
    assert gro_read(w.server, f, A1, w.now)
    ((vnet, got),) = w.server.to_tun
    assert bytes(got) == bytes(hp[1]) and peer(w, "C1").stats["bulk_rx"] == 1
    assert not w.server.server.frames.slots
    # The same read again: one replayed frame, refused; nothing held.
    assert gro_read(w.server, f, A1, w.now)
    assert len(w.server.to_tun) == 1 and w.server.server.stats["replay"] == 1
    assert not w.server.server.frames.slots


def test_a_whole_read_from_another_address_roams_only_when_it_opens():
    """As for fragments (test_a_frame_moves_the_endpoint_only_when_it_
    authenticates): a whole frame read from a new address moves the
    client there, a forged one does not."""
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 30000))
    bad = list(f)
    bad[3] = bytes(bad[3][:-1]) + bytes([bad[3][-1] ^ 1])
    assert gro_read(w.server, bad, A3, w.now)
    assert peer(w, "C1").endpoint == A1 and w.server.server.stats["forged"] == 1
    assert gro_read(w.server, f, A3, w.now)
    assert peer(w, "C1").endpoint == A3 and len(w.server.to_tun) == 1


@pytest.mark.parametrize("change", ["swap", "missing", "two-frames", "bad-last", "other-last",
                                    "data"])
def test_a_gro_read_that_is_not_one_clean_frame_is_left_to_the_split_path(change):
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 30000)
    f = frame(c1, hp)
    want = [bytes(hp[1])]
    if change == "swap":
        f = [f[0], f[2], f[1]] + f[3:]
    elif change == "missing":
        del f[5]
        want = []
    elif change == "two-frames":
        hp2 = tcp_super("10.0.0.2", "10.0.0.1", 20000, seq=30001)
        f = f[:-1] + frame(c1, hp2)[:-1]   # equal sizes: one GRO read
        want = []
    elif change == "bad-last":
        bad = bytearray(f[-1])
        bad[2] = wire.FLAG_CLOSE
        f = f[:-1] + [bytes(bad)]
        want = []
    elif change == "other-last":
        # The next frame's last fragment (its counter, the same count and
        # length) after this one's others: every index in order, no frame.
        f2 = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 30000, seq=30001))
        assert len(f2) == len(f) and len(f2[-1]) == len(f[-1])
        f = f[:-1] + [f2[-1]]
        want = []
    else:
        for i in range(5):
            c1.tun_packet(tcp_super("10.0.0.2", "10.0.0.1", 100, seq=i)[1].tobytes()[:140],
                          w.now)
        f, c1.to_net[:] = list(c1.to_net), []
        want = [None] * 5
    data, size = b"".join(f), len(f[0])
    assert not w.server.datagram_received.whole(data, size, A1, w.now)
    assert w.server.to_tun == [] and not w.server.server.frames.slots
    w.server.datagram_received.many(framing.split(data, size), A1, w.now)
    got = [bytes(x[1]) if type(x) is SuperPacket else None for x in w.server.to_tun]
    assert got == want
    assert w.server.server.stats["forged"] == 0 and peer(w, "C1").current is not None


def test_a_whole_read_with_a_forged_middle_is_refused_and_mended_by_the_genuine_one():
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    hp = tcp_super("10.0.0.2", "10.0.0.1", 30000)
    f = frame(c1, hp)
    forged = list(f)
    bad = bytearray(forged[7])
    bad[-1] ^= 0x55
    forged[7] = bytes(bad)
    assert gro_read(w.server, forged, A1, w.now)
    assert w.server.to_tun == [] and w.server.server.stats["forged"] == 1
    gro_read(w.server, f, A1, w.now)
    ((vnet, got),) = w.server.to_tun
    assert bytes(got) == bytes(hp[1])


def test_a_super_packet_within_the_tso_cap_is_one_udp_send():
    """The daemons cap their TUN's TSO size (wire.bulk_tso_max) so that a
    super-packet's frame goes out in one GSO send and arrives as one GRO
    read; a 64 KiB one would take two of each."""
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    assert c1.tso_max() == wire.bulk_tso_max(1472) < wire.bulk_one_send_packet(1472)
    for total, sends in ((wire.bulk_one_send_packet(1472), 1),
                         (wire.bulk_one_send_packet(1472) + 1, 2), (65535, 2)):
        hp = tcp_super("10.0.0.2", "10.0.0.1", total - 40)
        assert len(hp[1]) == total
        f = frame(c1, hp)
        reads = [run for _, run in framing.runs(f)]      # one GRO read per GSO send
        assert len(reads) == sends, total
        taken = [gro_read(w.server, r, A1, w.now) for r in reads]
        assert taken[0] == (sends == 1)              # uncut only when it is the whole frame
        assert bytes(w.server.to_tun.pop()[1]) == bytes(hp[1])


def test_a_sealed_frame_within_the_tso_cap_is_one_send_as_the_daemon_sends_it():
    """The same, with the frame as the core queues it (one glued Run, what
    the daemon's gso.Sender takes): 44 full fragments and a shorter 45th
    are one GSO send, hence one GRO read taken uncut; one byte more, two."""
    w = World(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    for total, sends in ((wire.bulk_one_send_packet(1472), 1),
                         (wire.bulk_tso_max(1472), 1),
                         (wire.bulk_one_send_packet(1472) + 1, 2)):
        hp = tcp_super("10.0.0.2", "10.0.0.1", total - 40)
        c1.tun_super(*hp, 0.0)
        (run,), c1.to_net[:] = c1.to_net, []
        sends_of = [r for _, r in framing.runs([run])]
        assert len(sends_of) == sends, total
        assert sum(len(r.buf) for r in sends_of) == len(run.buf)
        assert all(len(r.buf) <= framing.MAX_GSO_BYTES for r in sends_of)
        taken = [gro_read(w.server, r.datagrams(), A1, w.now) for r in sends_of]
        assert taken[0] == (sends == 1), total
        assert bytes(w.server.to_tun.pop()[1]) == bytes(hp[1])


# ------------------------------------------------- the default client (auto)


def default_client(cid):
    """The client core a user's command line builds: no --protocol (auto)."""
    from camex.daemon.client import make_core
    from camex.daemon.options import parse_args

    opts = parse_args(["-M", "client", "-a", "-n", cid, "-s", "192.0.2.1", "-p", "7000",
                       "-k", PW.decode()])
    return make_core(opts, cid, None)


def test_the_default_client_takes_whole_frames_and_gro_batches_as_v2_does():
    """`--protocol auto` (the default) must reach v2's batched receive
    paths: a GRO read that is one whole BULK frame opens without a slot,
    a GRO batch goes in one call - through the daemon's receive loop."""
    from camex.io import udp
    from camex.tunnel.client import AutoClientCore

    w = World(local_delivery=True)
    c1 = w.add(A1, default_client("C1"))
    assert type(c1) is AutoClientCore and c1.protocol == "v2" and c1.v2.established
    whole_frames = []
    real = c1.v2._frame_received
    c1.v2.datagram_received.frame = lambda *a: (whole_frames.append(1), real(*a))
    reads = []
    for seq in (1, 50001):
        hdr, pkt = tcp_super("10.0.0.1", "10.0.0.2", 50000, seq=seq)
        assert w.server.tun_super(hdr, pkt) is True
        ((run, addr),) = w.server.outbox
        w.server.outbox.clear()
        reads.append((bytes(run.buf), run.size, addr))
    it = iter(reads)

    def recv():
        for r in it:
            return r
        raise BlockingIOError

    udp.receive(recv, c1.datagram_received, False, w.now, True, lambda: 0, 99,
                lambda: None, lambda e: False)
    assert len(whole_frames) == 2            # each read opened whole, uncut
    assert c1.v2.bulk_rx_frames == 2 and len(c1.to_tun) == 2
    assert not c1.v2.session.frames.slots

    class Spy:
        def __init__(self, inner):
            self.inner, self.batches = inner, []

        def __call__(self, *a):
            self.inner(*a)

        def many(self, ds, now):
            self.batches.append(len(ds))
            self.inner.many(ds, now)

        def whole(self, *a):
            return self.inner.whole(*a)

    # A GRO batch cut apart (not one whole frame) goes to v2's many() in one call.
    spy = c1.v2.datagram_received = Spy(c1.v2.datagram_received)
    batch = frame(c1.v2, tcp_super("10.0.0.2", "10.0.0.1", 30000))
    c1.datagram_received.many([memoryview(d) for d in batch], w.now)
    assert spy.batches == [len(batch)]
