"""The flat lone-datagram paths (camex.v2.lone) against the full paths.

Two worlds alike (a server and two clients, seeded random bytes: the same
indexes, counters and lengths): one with
the flat paths the cores install, one with the full paths only. The same
sequence - lone packets, replays, forged tags, wrong receiver indexes,
reordered counters, multi-record DATA, keepalives, spoofed sources,
relays - must give the same datagrams, TUN writes, drops and counters."""

from camex.config import parse_config
from camex.v2 import bulk, wire
from camex.v2.core import V2ClientCore, V2ServerCore
from camex.v2.memlab import det_rng, ipv4
from tests.support.v2_pair import A1, A2, CONF, PW, Wire

C1, C2, GW, LOCAL = "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.1"


def world(fast: bool):
    srv = V2ServerCore(global_passphrase=PW, config=parse_config(CONF), local_delivery=True,
                       rng=det_rng(b"srv"))
    c1 = V2ClientCore(auto=True, passphrase=PW, client_id="cam1", rng=det_rng(b"c1"))
    c2 = V2ClientCore(auto=True, passphrase=b"cam2-own-secret", client_id="CAM2",
                      rng=det_rng(b"c2"))
    if not fast:   # the full paths only
        for c in (c1, c2):
            c.datagram_received = bulk.fast_receiver(c.session.frames, c._datagram_received,
                                                     c._frame_received)
            c.tun_packet = c._tun_packet
        srv.datagram_received = bulk.fast_receiver(srv.server.frames, srv._datagram_received,
                                                   srv.frame_received)
        srv.deliver = srv._deliver
        srv.seal_lone = None
    w = Wire(srv, {A1: c1, A2: c2})
    for c in (c1, c2):
        c.start(w.now)
        c.connected(w.now)
    w.pump()
    w.tick(1.0)
    assert c1.established and c2.established
    return w, srv, c1, c2


def take(lst):
    out = list(lst)
    lst.clear()
    return out


def state(srv, c1, c2):
    s = srv.server
    peers = {p.grant.address.exploded: (dict(p.stats), p.ack_due, p.endpoint,
                                        p.current.window.top, p.current.window.bitmap,
                                        p.current.send_counter)
             for p in s.peers.values()}
    clients = [(c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, dict(c.drops),
                dict(c.session.stats), c.session.ack_due, c.session.first_unanswered,
                c.last_rx, c.session.current.window.top, c.session.current.window.bitmap,
                c.session.current.send_counter) for c in (c1, c2)]
    return dict(s.stats), dict(srv.drops), peers, clients


def forged(d: bytes) -> bytes:
    return d[:-1] + bytes([d[-1] ^ 1])


def wrong_index(d: bytes) -> bytes:
    return d[:4] + bytes([d[4] ^ 0x55]) + d[5:]


def run(fast: bool) -> list:
    """The sequence; returns what came out at every step."""
    w, srv, c1, c2 = world(fast)
    log = []
    w.now += 0.5

    def step(what):
        out = take(srv.outbox)
        for d, addr in out:       # relays reach c2
            if addr == A2:
                c2.datagram_received(d, w.now)
        log.append((what, out, take(srv.to_tun), take(c1.to_tun),
                    take(c2.to_tun), take(c1.to_net), take(c2.to_net), state(srv, c1, c2)))

    # client -> server: lone packets to the server (local delivery) and to c2
    ds = []
    for i in range(6):
        c1.tun_packet(ipv4(C1, LOCAL if i % 2 else C2, b"up %d" % i), w.now)
        ds += c1.to_net
        step(("c1 tun", i))
    s1 = c1.session.current
    multi = s1.seal(wire.pack_records([ipv4(C1, LOCAL, b"m1"), ipv4(C1, C2, b"m2")]), w.now)
    keepalive = s1.seal(b"", w.now)
    spoofed = s1.seal(wire.pack_records([ipv4("10.9.9.9", LOCAL, b"spoof")]), w.now)
    short = s1.seal(wire.pack_records([b"\x45" * 10]), w.now)
    later = [c1.session.current.seal(wire.pack_records([ipv4(C1, LOCAL, b"late %d" % i)]), w.now)
             for i in range(3)]
    sequence = [ds[0], ds[1], ds[1], forged(ds[2]), ds[2], wrong_index(ds[3]), ds[3],
                ds[5], ds[4], ds[4], multi, keepalive, spoofed, short,
                later[2], later[0], forged(later[1]), later[1], later[1], ds[0]]
    for i, d in enumerate(sequence):
        srv.datagram_received(d, A1, w.now)
        step(("to server", i))
        w.now += 0.01
    # a client that moved: roaming goes the full way
    c1.tun_packet(ipv4(C1, LOCAL, b"roamed"), w.now)
    srv.datagram_received(take(c1.to_net)[0], ("192.0.2.9", 4009), w.now)
    step("roamed")

    # server -> client: lone packets from the server's TUN, relays to c1
    back = []
    for i in range(5):
        srv.tun_packet(ipv4(LOCAL, C1, b"down %d" % i), w.now)
        back += [d for d, _ in srv.outbox]
        step(("srv tun", i))
    srv.tun_packet(ipv4(LOCAL, "10.0.0.77", b"nobody"), w.now)
    step("no route")
    peer = next(p for p in srv.server.peers.values() if p.client_id == "cam1")
    sp = peer.current
    mb = sp.seal(wire.pack_records([ipv4(LOCAL, C1, b"m1"), ipv4(LOCAL, C1, b"m2")]), w.now)
    kb = sp.seal(b"", w.now)
    sb = sp.seal(wire.pack_records([b"\x60" * 30]), w.now)
    seq2 = [back[0], back[0], forged(back[1]), back[1], wrong_index(back[2]), back[3],
            back[2], back[2], mb, kb, sb, back[4], b"\xc2\x04" + back[4][2:10]]
    for i, d in enumerate(seq2):
        c1.datagram_received(d, w.now)
        step(("to client", i))
        w.now += 0.01
    w.tick(1.0)
    step("tick")
    return log


def shape(entry):
    """A step's outputs with each datagram as its header and length: the
    handshakes draw on the system's random source too, so the two worlds
    have different keys (same indexes, counters and lengths)."""
    what, outbox, srv_tun, c1_tun, c2_tun, c1_net, c2_net, st = entry
    dg = lambda d: (bytes(d[:16]), len(d))   # noqa: E731
    return (what, [(dg(d), a) for d, a in outbox], srv_tun, c1_tun, c2_tun,
            [dg(d) for d in c1_net], [dg(d) for d in c2_net], st)


def test_flat_and_full_paths_agree():
    fast, full = run(True), run(False)
    assert len(fast) == len(full)
    for a, b in zip(fast, full):
        assert shape(a) == shape(b), a[0]


def test_the_sequence_delivers_what_a_user_expects():
    log = run(True)
    srv_tun = [p for e in log for p in e[2]]
    c2_tun = [p for e in log for p in e[4]]
    c1_tun = [p for e in log for p in e[3]]
    payloads = lambda ps: [bytes(p[20:]) for p in ps]   # noqa: E731
    # replays, forged tags and spoofed sources never reach a TUN; reordered
    # counters inside the window do, once
    assert payloads(srv_tun) == [b"up 1", b"up 3", b"up 5", b"m1", b"late 2", b"late 0",
                                 b"late 1", b"roamed"]
    assert payloads(c2_tun) == [b"up 0", b"up 2", b"up 4", b"m2"]
    assert payloads(c1_tun) == [b"down 0", b"down 1", b"down 3", b"down 2", b"m1", b"m2",
                                b"down 4"]
    stats = log[-1][-1][0]
    assert (stats["replay"], stats["forged"], stats["spoofed"], stats["unknown_index"]) \
        == (4, 2, 2, 1)
    c1 = log[-1][-1][3][0]
    assert c1[4] == {"not-ipv4": 1}        # the IPv6 record
    assert {k: c1[5][k] for k in ("replay", "forged", "stale", "malformed")} == \
        {"replay": 2, "forged": 1, "stale": 1, "malformed": 1}
