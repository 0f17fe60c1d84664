"""The flat lone-datagram paths (camex.v2.lone) against the full paths.

Two worlds alike (a server and two clients, seeded random bytes: the same
indexes, counters and lengths): one with the flat paths the cores install,
one with the full paths only. The same sequences must give the same
datagrams, TUN writes, drops, counters and state:
- lone packets, replays, forged tags, wrong receiver indexes, reordered
  counters, multi-record DATA, keepalives, spoofed sources, relays;
- the rekey and reject limits by message count and by age, both ways, with
  the rekey limit before and after the reject limit;
- a previous session both ways, REKEY, CLOSE and unknown flags, roaming
  (with a replay and a forgery from elsewhere), BULK fragments interleaved
  with lone DATA and sharing its counters;
- whole BULK frames as one GRO read hands them over (the server's flat
  frame path): local delivery and relay, TCP super-packets, replays,
  forgeries, reordering, flags, roaming, several records, IPv6, spoofed
  and unrouted destinations, the receive limit and the reject age;
- super-packets from a client's TUN as its daemon hands them over (the
  client's flat frame path, then bulk_ready and tun_super): IPv4 TCP with
  and without ECN, UDP, IPv6, no GSO size, a header that disagrees,
  too large a frame for the path, the rekey and reject limits by message
  count and by age, the send limit, an auto client not configured yet;
- whole BULK frames from the server to a client (the client's flat frame
  path): TCP super-packets, packets, several records, IPv6, headers that
  do not add up, replays, forgeries, reordering, flags, CLOSE, the
  previous session, reserved bytes, the receive limit and the reject age;
- a TCP stream over IPv6 inside through all three frame paths (client,
  relay, receiving client) and what must leave it: the server's address,
  unrouted and spoofed ones, the sender itself, a UDP type, smaller
  frames, a record too short for IPv6 in a frame of tiny datagrams.

Breaking any check of camex/v2/lone.py makes one of these fail, except
four that cannot change an answer: the receiver-index tests (a datagram of
another session fails the AEAD under the current key and goes the full
way) and the `confirmed` tests (a client's sessions and a server peer's
current session are always confirmed)."""

import pytest

from camex.daemon.config import parse_config
from camex.v2.framing import datagrams_of
from camex.base import netpkt
from camex.v2 import bulk, framing, wire
from camex.v2.core import V2ClientCore, V2ServerCore
from camex.testing.memlab import det_rng, ipv4
from camex.v2.noise import nonce_bytes
from camex.v2.session import AEADS, Timers
from tests.support.v2_pair import A1, A2, CONF, PW, connect

C1, C2, GW, LOCAL = "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.1"


def world(fast: bool):
    w, srv, c1, c2 = timed_world(fast)
    w.tick(1.0)
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
    # a packet for the sender's own address: no way back to it
    c1.tun_packet(ipv4(C1, C1, b"to itself"), w.now)
    srv.datagram_received(take(c1.to_net)[0], A1, w.now)
    step("to itself")
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


@pytest.mark.parametrize("entry", [True, "one"], ids=["in-a-batch", "read-alone"])
def test_flat_and_full_paths_agree(entry):
    fast, full = run(entry), run(False)
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
    assert log[-1][-1][1]["no-route"] == 2      # the packet to itself, and "nobody"
    c1 = log[-1][-1][3][0]
    assert c1[4] == {"not-ipv4": 1}        # the IPv6 record
    assert {k: c1[5][k] for k in ("replay", "forged", "stale", "malformed")} == \
        {"replay": 2, "forged": 1, "stale": 1, "malformed": 1}


def test_a_lone_relay_is_sealed_by_the_flat_path():
    """A lone DATA datagram for another v2 client's tunnel address is
    sealed for it straight from the flat receive path (route() is not
    asked), and that client gets the packet."""
    w, srv, c1, c2 = world(True)
    asked = []
    route = srv.server.route
    srv.server.route = lambda dst: (asked.append(bytes(dst)), route(dst))[1]
    c1.tun_packet(ipv4(C1, C2, b"relayed"), w.now)
    srv.datagram_received(take(c1.to_net)[0], A1, w.now)
    ((d, addr),) = take(srv.outbox)
    assert addr == A2 and asked == []
    c2.datagram_received(d, w.now)
    assert [bytes(p[20:]) for p in take(c2.to_tun)] == [b"relayed"]


# --- limits, ages, a previous session, flags, roaming and BULK ---------------
#
# The same two worlds, with timers shrunk so that the limits come within a
# few datagrams. Each scenario below is run once per world; every step
# records what left each core and the full state the checks read and write
# (windows, counters and limits, sessions current and previous, endpoints,
# timers, statistics), and the two logs must be equal step by step. Each
# scenario also asserts what a user sees, so that it cannot pass by doing
# nothing.

A1B, A3 = ("198.51.100.7", 5001), ("203.0.113.9", 6001)


class _ByOne:
    """A core's DatagramReceiver entered by `one`, as the daemons enter it
    for a datagram read alone (the flat path in front of everything)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *a):
        self.inner.one(*a)

    def whole(self, *a):
        return self.inner.whole(*a)

    def many(self, *a):
        self.inner.many(*a)


def timed_world(fast, conf: str = CONF, **timers):
    """A server and two clients with established sessions, Timers(**timers)
    in every core; `fast`: the flat paths the cores install (entered as a
    datagram of a GRO batch is, or by `one` as a datagram read alone:
    fast="one"), else the full paths only."""
    srv = V2ServerCore(global_passphrase=PW, config=parse_config(conf), local_delivery=True,
                       rng=det_rng(b"srv"), timers=Timers(**timers))
    c1 = V2ClientCore(auto=True, passphrase=PW, client_id="cam1", rng=det_rng(b"c1"),
                      timers=Timers(**timers))
    c2 = V2ClientCore(auto=True, passphrase=b"cam2-own-secret", client_id="CAM2",
                      rng=det_rng(b"c2"), timers=Timers(**timers))
    if not fast:
        for c in (c1, c2):
            c.datagram_received = bulk.FastReceiver(c.session.frames, c._datagram_received,
                                                    c._frame_received)
            c.tun_packet = c._tun_packet
            c.tun_frame = None
        srv.frame_received = srv._frame_received
        srv.datagram_received = bulk.FastReceiver(srv.server.frames, srv._datagram_received,
                                                  srv.frame_received)
        srv.deliver = srv._deliver
        srv.tun_packet = srv._tun_packet
        srv.seal_lone = None
    elif fast == "one":
        for core in (c1, c2, srv):
            assert core.datagram_received.one != core.datagram_received.__call__
            core.datagram_received = _ByOne(core.datagram_received)
    w = connect(srv, c1, c2)
    assert c1.established and c2.established
    return w, srv, c1, c2


def handshake_again(log, w, srv, c1, label) -> None:
    """The held INITs have reached the server: its RESP to c1, c1's
    confirmation back, each step logged (the last one as `label`)."""
    out, _, _ = log.step("INITs released")
    for d, _ in out:
        c1.datagram_received(d, w.now)
    _, n1, _ = log.step("RESP in")
    for d in n1:
        srv.datagram_received(d, A1, w.now)
    log.step(label)


def sess(s):
    """What the checks read and write of a session (its keys aside: the
    handshakes draw on the system's random source)."""
    if s is None:
        return None
    return (s.local_index, s.remote_index, s.send_counter, s.window.top, s.window.bitmap,
            s.confirmed, s.created, s.last_sent, s.last_received, s.send_limit, s.recv_limit)


def full_state(srv, c1, c2):
    s = srv.server
    peers = {p.key: (dict(p.stats), p.ack_due, p.timer_at, p.endpoint, sess(p.current),
                     sess(p.previous)) for p in s.peers.values()}
    owners = sorted((i, type(o).__name__) for i, o in s.sessions.items())
    clients = [(c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, dict(c.drops), c.last_rx,
                c.last_register, dict(c.session.stats), c.session.ack_due,
                c.session.first_unanswered, c.session.handshaking, c.session.next_handshake,
                len(c.session.queue), c.session.up, sess(c.session.current),
                sess(c.session.previous), c.next_deadline()) for c in (c1, c2)]
    return (dict(s.stats), dict(srv.drops), peers, owners, sorted(s.pending_by_key),
            srv.next_deadline(), clients)


class Log:
    """Step by step: what came out of every core, and the state after."""

    def __init__(self, w, srv, c1, c2):
        self.w, self.srv, self.c1, self.c2 = w, srv, c1, c2
        self.entries = []

    def step(self, what):
        """Take every output (cut BULK runs into datagrams), log it, return
        (server outbox [(datagram, addr)], c1's datagrams, c2's datagrams)."""
        srv, c1, c2 = self.srv, self.c1, self.c2
        out = [(x, a) for d, a in take(srv.outbox) for x in datagrams_of([d])]
        n1, n2 = datagrams_of(take(c1.to_net)), datagrams_of(take(c2.to_net))
        self.entries.append((what, [(head(d), len(d), a) for d, a in out],
                             take(srv.to_tun), take(c1.to_tun), take(c2.to_tun),
                             [(head(d), len(d)) for d in n1], [(head(d), len(d)) for d in n2],
                             full_state(srv, c1, c2)))
        return out, n1, n2


def head(d) -> bytes:
    """A datagram's header: DATA and BULK whole (flags, receiver, counter,
    fragment); a handshake's type and indexes only (its ephemeral keys are
    random)."""
    return bytes(d[:16] if d[1] in (wire.T_DATA, wire.T_BULK) else d[:8])


def kind(d) -> int:
    return wire.msg_type(d)


def raw_data(s, counter: int, plain: bytes, flags: int = 0) -> bytes:
    """A DATA datagram sealed under `s`'s send key with any counter (the
    session's own seal refuses counters past its limit and never goes back)."""
    header = wire.data_header(s.remote_index, counter, flags)
    return header + AEADS.get(s.send_key).encrypt(nonce_bytes(counter), plain, header)


def rec(src, dst, text) -> bytes:
    return wire.pack_records([ipv4(src, dst, text)])


def both(scenario, conf: str = CONF, **timers):
    """Run `scenario(log)` in both worlds; the logs must be equal. Returns
    the flat paths' log (for the scenario's own assertions)."""
    logs = []
    for fast in (True, "one", False):
        log = Log(*timed_world(fast, conf, **timers))
        scenario(log)
        logs.append(log.entries)
    fast, one, full = logs
    for flat in (fast, one):
        assert [e[0] for e in flat] == [e[0] for e in full]
        for a, b in zip(flat, full):
            assert a == b, a[0]
    return fast


def payloads(entries, index):
    return [bytes(p[20:]) for e in entries for p in e[index]]


def stats_at(entries, what):
    return next(e for e in entries if e[0] == what)[-1]


def counts_up(log):
    """Client -> server by message count: DATA flows while the counter is
    below the rekey limit; past it the client starts a handshake (its INITs
    held back here) and keeps sending until the reject limit, then queues.
    A counter at or past the server's receive limit, or a replay near it,
    is refused. Then the handshake completes and the queue drains."""
    w, srv, c1 = log.w, log.srv, log.c1
    held = []
    for i in range(12):
        c1.tun_packet(ipv4(C1, LOCAL, b"count %d" % i), w.now)
        _, n1, _ = log.step(("c1 tun", i))
        held += [d for d in n1 if kind(d) == wire.T_INIT]
        for d in n1:
            if kind(d) == wire.T_DATA:
                srv.datagram_received(d, A1, w.now)
                log.step(("server got", i))
        w.now += 0.01
    s = c1.session.current
    limit = s.send_limit
    for label, d in (("at limit", raw_data(s, limit, rec(C1, LOCAL, b"at limit"))),
                     ("past limit", raw_data(s, limit + 5, rec(C1, LOCAL, b"past"))),
                     ("replay below limit", raw_data(s, limit - 1, rec(C1, LOCAL, b"again")))):
        srv.datagram_received(d, A1, w.now)
        log.step(label)
    for d in held:
        srv.datagram_received(d, A1, w.now)
    handshake_again(log, w, srv, c1, "queue drained")
    for i in range(3):
        c1.tun_packet(ipv4(C1, LOCAL, b"new session %d" % i), w.now)
        _, n1, _ = log.step(("c1 tun, new session", i))
        for d in n1:
            srv.datagram_received(d, A1, w.now)
        log.step(("server got, new session", i))


@pytest.mark.parametrize("rekey", [6, 1000], ids=["rekey-first", "reject-first"])
def test_message_limits_client_to_server_agree(rekey):
    # reject-first: a rekey limit past the reject limit, so that the send
    # paths' reject checks are the ones that stop them
    entries = both(counts_up, rekey_after_messages=rekey, reject_after_messages=10)
    got = payloads(entries, 2)
    # Sent under the old session: up to its reject limit (counters 0-9,
    # some taken by the handshake's keepalive); the rest waited for the new
    # session and came then, in order; nothing crafted near the limit.
    assert got[:3] == [b"count 0", b"count 1", b"count 2"]
    assert b"at limit" not in got and b"past" not in got and b"again" not in got
    assert got[-3:] == [b"new session 0", b"new session 1", b"new session 2"]
    assert sorted(got) == sorted([b"count %d" % i for i in range(12)]
                                 + [b"new session %d" % i for i in range(3)])
    inits = [e for e in entries if e[0][0] == "c1 tun" and any(h[1] == wire.T_INIT
                                                               for h, _ in e[5])]
    assert inits, "the rekey limit started no handshake"
    assert stats_at(entries, "past limit")[0]["replay"] == 2   # at and past the limit
    assert stats_at(entries, "replay below limit")[0]["replay"] == 3


def counts_down(log):
    """Server -> client by message count: past the rekey limit the server
    flags its DATA (REKEY, full path) and the client starts a handshake
    (held back); past the reject limit the server sends nothing more. The
    client refuses a counter at or past its receive limit."""
    w, srv, c1 = log.w, log.srv, log.c1
    held = []
    for i in range(12):
        srv.tun_packet(ipv4(LOCAL, C1, b"down %d" % i), w.now)
        out, _, _ = log.step(("srv tun", i))
        for d, _ in out:
            c1.datagram_received(d, w.now)
            _, n1, _ = log.step(("c1 got", i))
            held += [x for x in n1 if kind(x) == wire.T_INIT]
        w.now += 0.01
    peer = next(p for p in srv.server.peers.values() if p.client_id == "cam1")
    s = peer.current
    limit = s.send_limit
    for label, d in (("at limit", raw_data(s, limit, rec(LOCAL, C1, b"at limit"))),
                     ("replay below limit", raw_data(s, limit - 1, rec(LOCAL, C1, b"again")))):
        c1.datagram_received(d, w.now)
        log.step(label)
    for d in held:
        srv.datagram_received(d, A1, w.now)
    handshake_again(log, w, srv, c1, "confirmed")
    for i in range(3):
        srv.tun_packet(ipv4(LOCAL, C1, b"new %d" % i), w.now)
        out, _, _ = log.step(("srv tun, new session", i))
        for d, _ in out:
            c1.datagram_received(d, w.now)
        log.step(("c1 got, new session", i))


def test_message_limits_server_to_client_agree():
    entries = both(counts_down, rekey_after_messages=6, reject_after_messages=10)
    got = payloads(entries, 3)
    assert b"at limit" not in got and b"again" not in got
    assert got[-3:] == [b"new 0", b"new 1", b"new 2"]
    # past the send limit the server had no session to send with: dropped
    assert 0 < len(got) - 3 < 12
    flagged = [h for e in entries if e[0][0] == "srv tun" for h, _, _ in e[1]
               if h[2] & wire.FLAG_REKEY]
    assert flagged, "no DATA past the rekey limit carried the REKEY flag"
    assert any(h[2] == 0 for e in entries if e[0][0] == "srv tun" for h, _, _ in e[1])


def test_server_send_limit_without_rekey_limit_agrees():
    # The reject limit first: no REKEY flag ever, the server stops sending
    # at its limit and the client, hearing nothing new, has nothing to do.
    entries = both(counts_down, rekey_after_messages=1000, reject_after_messages=10)
    got = payloads(entries, 3)
    assert not any(h[2] for e in entries for h, _, _ in e[1])
    sent = [e for e in entries if e[0][0] == "srv tun" and e[1]]
    assert 0 < len(sent) < 12 and got == [b"down %d" % i for i in range(len(sent))]
    assert all(e[1] == [] for e in entries if e[0][0] == "srv tun" and e[0][1] >= len(sent))


def ages(log):
    """Both ways by age, without timers firing (a late loop): the client
    starts a handshake at rekey_after_time, the server flags from
    rekey_after_time + 2 handshake_retry, neither sends nor accepts from
    reject_after_time on; a datagram sealed in time but arriving late is
    stale. The handshake then completes and data flows again."""
    w, srv, c1 = log.w, log.srv, log.c1
    t0 = c1.session.current.created
    held, late = [], []
    for age in (0.5, 2.0, 4.9, 5.0, 5.5, 6.9, 7.0, 7.5, 8.9, 9.0, 9.5):
        w.now = t0 + age
        c1.tun_packet(ipv4(C1, LOCAL, b"up at %g" % age), w.now)
        srv.tun_packet(ipv4(LOCAL, C1, b"down at %g" % age), w.now)
        out, n1, _ = log.step(("sent", age))
        held += [d for d in n1 if kind(d) == wire.T_INIT]
        ups = [d for d in n1 if kind(d) == wire.T_DATA]
        downs = [d for d, _ in out]
        if age == 8.9:          # these arrive after the reject time
            late = ups + downs
            continue
        for d in ups:
            srv.datagram_received(d, A1, w.now)
        for d in downs:
            c1.datagram_received(d, w.now)
        _, n1, _ = log.step(("received", age))
        held += [d for d in n1 if kind(d) == wire.T_INIT]
    w.now = t0 + 9.2
    for d in late:
        if kind(d) == wire.T_DATA and d[4:8] == late[0][4:8]:
            srv.datagram_received(d, A1, w.now)
        else:
            c1.datagram_received(d, w.now)
        log.step("late")
    for d in held[-2:]:
        srv.datagram_received(d, A1, w.now)
    handshake_again(log, w, srv, c1, "confirmed")
    c1.tun_packet(ipv4(C1, LOCAL, b"up again"), w.now)
    srv.tun_packet(ipv4(LOCAL, C1, b"down again"), w.now)
    out, n1, _ = log.step("new session")
    for d in n1:
        srv.datagram_received(d, A1, w.now)
    for d, _ in out:
        c1.datagram_received(d, w.now)
    log.step("new session received")


AGE_TIMERS = dict(rekey_after_time=5.0, reject_after_time=9.0, handshake_retry=1.0,
                  passive_keepalive=100.0, dead_after=100.0)


def test_age_limits_agree():
    entries = both(ages, **AGE_TIMERS)
    up, down = payloads(entries, 2), payloads(entries, 3)
    before = [0.5, 2, 4.9, 5, 5.5, 6.9, 7, 7.5]
    # Sent at 8.9, arrived at 9.2: stale both ways. From 9 on the client
    # queues for the next session; the server drops (the client is back soon).
    assert up == [b"up at %g" % a for a in before + [9, 9.5]] + [b"up again"]
    assert down == [b"down at %g" % a for a in before] + [b"down again"]
    late = stats_at(entries, "INITs released")
    assert late[0]["stale"] == 1 and late[-1][0][7]["stale"] == 1
    sent = {e[0][1]: e for e in entries if e[0][0] == "sent"}
    # the client starts its handshake at 5.0, not before; the server flags
    # REKEY from 7.0 (5 + 2 retries)
    assert not any(h[1] == wire.T_INIT for h, _ in sent[4.9][5])
    assert any(h[1] == wire.T_INIT for h, _ in sent[5.0][5])
    assert all(h[2] == 0 for h, _, _ in sent[6.9][1])
    assert sent[7.0][1] and all(h[2] & wire.FLAG_REKEY for h, _, _ in sent[7.0][1])
    assert sent[9.0][1] == []


def test_age_limits_agree_when_the_rekey_time_is_past_the_reject_time():
    # A configuration where the reject time comes first: the age checks of
    # the send paths are then the reject checks, not the rekey ones.
    entries = both(ages, **dict(AGE_TIMERS, rekey_after_time=20.0))
    up, down = payloads(entries, 2), payloads(entries, 3)
    before = [0.5, 2, 4.9, 5, 5.5, 6.9, 7, 7.5]
    assert up == [b"up at %g" % a for a in before + [9, 9.5]] + [b"up again"]
    assert down == [b"down at %g" % a for a in before] + [b"down again"]
    sent = {e[0][1]: e for e in entries if e[0][0] == "sent"}
    assert all(h[2] == 0 for a in before for h, _, _ in sent[a][1])   # no REKEY flag
    assert sent[9.0][1] == [] and [h[1] for h, _ in sent[9.0][5]] == [wire.T_INIT]


def frame(s, records, now, max_datagram=1472):
    """The fragments of one BULK frame sealed under `s` (its next counter)."""
    return datagrams_of(s.seal_frame(wire.pack_bulk_records(records), now, max_datagram))


def sessions_flags_roaming_bulk(log):
    """A previous session both ways, REKEY and CLOSE flags and an unknown
    flag bit, roaming (and a replay or a forgery from elsewhere, which must
    not move the endpoint), BULK frames whose fragments interleave with
    lone DATA and share its counters."""
    w, srv, c1, c2 = log.w, log.srv, log.c1, log.c2
    w.now += 0.5
    peer = next(p for p in srv.server.peers.values() if p.client_id == "cam1")
    old_c, old_s = c1.session.current, peer.current
    old_up = [old_c.seal(rec(C1, LOCAL, b"old up %d" % i), w.now) for i in range(2)]
    old_down = [old_s.seal(rec(LOCAL, C1, b"old down %d" % i), w.now) for i in range(2)]
    # The server asks for a rekey (the full path sends REKEY past its limits):
    c1.datagram_received(old_s.seal(rec(LOCAL, C1, b"rekey please"), w.now, wire.FLAG_REKEY),
                         w.now)
    _, n1, _ = log.step("REKEY flag to c1")
    for d in n1:
        srv.datagram_received(d, A1, w.now)
    out, _, _ = log.step("INIT to server")
    # before the client confirms, lone DATA still arrives on the old session
    c1.tun_packet(ipv4(C1, LOCAL, b"while pending"), w.now)
    _, n1, _ = log.step("c1 tun while pending")
    for d in n1:
        srv.datagram_received(d, A1, w.now)
    log.step("server got, pending")
    for d, _ in out:
        c1.datagram_received(d, w.now)
    _, n1, _ = log.step("RESP to c1")
    for d in n1:
        srv.datagram_received(d, A1, w.now)
    log.step("confirmed")
    # the previous session, both ways, and its replays
    for i, d in enumerate(old_up + old_up[:1]):
        srv.datagram_received(d, A1, w.now)
        log.step(("previous session up", i))
    for i, d in enumerate(old_down + old_down[1:]):
        c1.datagram_received(d, w.now)
        log.step(("previous session down", i))
    new_c, new_s = c1.session.current, peer.current
    # flags: unknown bit, CLOSE to and from the server come last
    odd = new_c.seal(rec(C1, LOCAL, b"odd flag"), w.now, 0x40)
    srv.datagram_received(odd, A1, w.now)
    log.step("unknown flag up")
    c1.datagram_received(new_s.seal(rec(LOCAL, C1, b"odd down"), w.now, 0x40), w.now)
    log.step("unknown flag down")

    # roaming: c1 moves; a replay and a forgery from elsewhere must not move it
    ups = []
    for i in range(4):
        c1.tun_packet(ipv4(C1, LOCAL if i % 2 else C2, b"roam %d" % i), w.now)
        ups += log.step(("c1 tun, roaming", i))[1]
    for label, d, addr in (("from B", ups[0], A1B), ("again from B", ups[1], A1B),
                           ("replay from A", ups[0], A1), ("forged from C", forged(ups[2]), A3),
                           ("from A again", ups[2], A1), ("late from B", ups[3], A1B)):
        srv.datagram_received(d, addr, w.now)
        out, _, _ = log.step(label)
        for x, a in out:
            if a == A2:
                c2.datagram_received(x, w.now)
                log.step((label, "relayed to c2"))
    # after the move the server sends to the new address
    srv.tun_packet(ipv4(LOCAL, C1, b"to where c1 is"), w.now)
    out, _, _ = log.step("srv tun after roaming")
    assert {a for _, a in out} == {A1B}

    # BULK up: fragments of one frame with lone DATA in between; then a
    # DATA with a frame's counter, the frame again, a frame for c2 (relay)
    big = ipv4(C1, LOCAL, b"B" * 3000)
    frag = frame(new_c, [(0, big)], w.now)
    c1.tun_packet(ipv4(C1, LOCAL, b"between fragments"), w.now)
    (lone,) = log.step("c1 tun between")[1]
    frame_counter = int.from_bytes(frag[0][8:16], "little")
    bulk_seq = [("fragment 0", frag[0]), ("lone DATA", lone)] + \
        [(("fragment", i), f) for i, f in enumerate(frag[1:], 1)] + \
        [("DATA with the frame's counter",
          raw_data(new_c, frame_counter, rec(C1, LOCAL, b"same counter"))),
         ("frame again", None)]
    for label, d in bulk_seq:
        for x in (frag if d is None else [d]):
            srv.datagram_received(x, A1, w.now)
        log.step(label)
    relay = frame(new_c, [(0, ipv4(C1, C2, b"R" * 2500))], w.now)
    for i, d in enumerate(relay):
        srv.datagram_received(d, A1, w.now)
        out, _, _ = log.step(("relay fragment", i))
        for x, _ in out:
            c2.datagram_received(x, w.now)
            log.step(("c2 got", i))
    # BULK down, the same interleaving
    frag = frame(new_s, [(0, ipv4(LOCAL, C1, b"D" * 3000))], w.now)
    srv.tun_packet(ipv4(LOCAL, C1, b"down between"), w.now)
    ((lone, _),) = log.step("srv tun between")[0]
    for i, d in enumerate([frag[0], lone] + frag[1:] + frag):
        c1.datagram_received(d, w.now)
        log.step(("bulk down", i))

    # CLOSE from c2, here with a record (the server forgets c2 and takes
    # nothing from a session that ends), then relays to it go nowhere
    srv.datagram_received(c2.session.current.seal(rec(C2, LOCAL, b"last words"), w.now,
                                                  wire.FLAG_CLOSE), A2, w.now)
    log.step("server got CLOSE")
    c1.tun_packet(ipv4(C1, C2, b"to a closed c2"), w.now)
    for d in log.step("c1 tun to closed c2")[1]:
        srv.datagram_received(d, A1, w.now)
    log.step("server after c2 left")
    # CLOSE from the server: the client starts over
    c1.datagram_received(new_s.seal(b"", w.now, wire.FLAG_CLOSE), w.now)
    log.step("CLOSE to c1")
    c1.datagram_received(new_s.seal(rec(LOCAL, C1, b"after close"), w.now), w.now)
    log.step("DATA after CLOSE")
    w.tick(2.0)
    log.step("tick")


def test_sessions_flags_roaming_and_bulk_agree():
    entries = both(sessions_flags_roaming_bulk)
    up, down, c2 = payloads(entries, 2), payloads(entries, 3), payloads(entries, 4)
    assert up[:3] == [b"while pending", b"old up 0", b"old up 1"]
    assert up[3] == b"odd flag"
    assert down[:4] == [b"rekey please", b"old down 0", b"old down 1", b"odd down"]
    # roaming: each datagram once, wherever it came from; the replay and the
    # forgery moved nothing
    assert [p for p in up if p.startswith(b"roam")] == [b"roam 1", b"roam 3"]
    assert [p for p in c2 if p.startswith(b"roam")] == [b"roam 0", b"roam 2"]
    moves = [e[-1][2]["cam1"][3] for e in entries if e[0] in (
        "from B", "again from B", "replay from A", "forged from C", "from A again",
        "late from B")]
    assert moves == [A1B, A1B, A1B, A1B, A1, A1B]
    # BULK: the frame once, the lone DATA between its fragments, nothing
    # for the DATA that reused the frame's counter nor for the frame again
    assert b"between fragments" in up and b"same counter" not in up
    assert [p for p in up if p.startswith(b"BBB")] == [b"B" * 3000]
    assert [p for p in c2 if p.startswith(b"RRR")] == [b"R" * 2500]
    assert [p for p in down if p.startswith(b"DDD")] == [b"D" * 3000]
    assert b"down between" in down
    assert b"to a closed c2" not in c2 and b"after close" not in down
    assert b"last words" not in up
    assert "cam2" not in stats_at(entries, "server got CLOSE")[2]   # c2 closed: forgotten
    # CLOSE from the server: c1 knocks at once and is back after the tick
    closed = next(e for e in entries if e[0] == "CLOSE to c1")
    assert closed[-1][-1][0][10] and closed[-1][-1][0][14] is None
    assert any(h[1] == wire.T_INIT for h, _ in closed[5])
    assert entries[-1][-1][-1][0][14] is not None and "cam1" in entries[-1][-1][2]


# --- IPv6 inside: the client's flat receive path takes it too -----------------

CONF6 = CONF.replace("local_cidr = 10.0.0.2/24", "local_cidr = 10.0.0.2/24\nlocal_cidr = fd00:c::2/64") \
    .replace("gateway_ip = 10.0.0.1", "gateway_ip = 10.0.0.1\ngateway_ip = fd00:c::1")
C1_6, GW6 = "fd00:c::2", "fd00:c::1"


def ipv6(src, dst, payload: bytes, proto: int = 17) -> bytes:
    import ipaddress
    return (bytes([0x60, 0, 0, 0]) + len(payload).to_bytes(2, "big") + bytes([proto, 64])
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def ipv6_both_ways(log):
    """cam1 has an IPv6 address, cam2 has none. IPv6 from the server's TUN
    to cam1 (lone DATA: replays, forgeries, reordering, a record too short
    for IPv6, several records), IPv6 from cam1 to the server's TUN, and
    IPv6 sealed for cam2, which must drop it."""
    w, srv, c1, c2 = log.w, log.srv, log.c1, log.c2
    assert c1.config.address6 is not None and c2.config.address6 is None
    w.now += 0.5
    back = []
    for i in range(5):
        srv.tun_packet(ipv6(GW6, C1_6, b"down6 %d" % i), w.now)
        out, _, _ = log.step(("srv tun", i))
        back += [d for d, _ in out]
    sp = next(p for p in srv.server.peers.values() if p.client_id == "cam1").current
    multi = sp.seal(wire.pack_records([ipv6(GW6, C1_6, b"m6"), ipv4(LOCAL, C1, b"m4")]), w.now)
    short = sp.seal(wire.pack_records([b"\x60" + bytes(38)]), w.now)
    four = sp.seal(rec(LOCAL, C1, b"four"), w.now)
    for i, d in enumerate([back[0], back[0], forged(back[1]), back[1], back[3], back[2],
                           back[2], multi, short, four, back[4]]):
        c1.datagram_received(d, w.now)
        log.step(("to c1", i))
        w.now += 0.01
    ups = []
    for i in range(3):
        c1.tun_packet(ipv6(C1_6, GW6, b"up6 %d" % i), w.now)
        ups += log.step(("c1 tun", i))[1]
    s1 = c1.session.current
    spoofed = s1.seal(wire.pack_records([ipv6("fd00:c::77", GW6, b"spoof6")]), w.now)
    theirs = s1.seal(wire.pack_records([ipv6("fd00:c::3", GW6, b"not mine")]), w.now)
    short = s1.seal(wire.pack_records([b"\x60" + bytes(30)]), w.now)
    for i, d in enumerate([ups[0], ups[0], forged(ups[1]), ups[2], ups[1], spoofed, theirs,
                           short]):
        srv.datagram_received(d, A1, w.now)
        log.step(("up6 at the server", i))
    s2 = next(p for p in srv.server.peers.values() if p.client_id == "CAM2").current
    c2.datagram_received(s2.seal(wire.pack_records([ipv6(GW6, "fd00:c::3", b"no")]), w.now),
                         w.now)
    log.step("to c2")


def test_ipv6_for_a_client_agrees_and_takes_the_flat_path():
    entries = both(ipv6_both_ways, CONF6)
    c1_tun = [bytes(p) for e in entries for p in e[3]]
    # replays and forgeries never reach the TUN; reordered counters do, once
    assert [p[40:] if p[0] >> 4 == 6 else p[20:] for p in c1_tun] == \
        [b"down6 0", b"down6 1", b"down6 3", b"down6 2", b"m6", b"m4", b"four", b"down6 4"]
    assert [bytes(p[40:]) for e in entries for p in e[2]] == [b"up6 0", b"up6 2", b"up6 1"]
    # fd00:c::77, cam2's address, and a record too short to hold an IPv6 source
    assert entries[-1][-1][0]["spoofed"] == 3 and entries[-1][-1][0]["forged"] == 1
    c1, c2 = entries[-1][-1][-1]
    assert c1[4] == {"not-ipv4": 1} and c2[4] == {"not-ipv4": 1}   # the short record; cam2's
    assert c1[7]["replay"] == 2 and c1[7]["forged"] == 1
    # The lone IPv6 datagrams of the flat world are written as lone IPv4
    # ones are: no record parsing, no Deliver event, no full path.
    w, srv, c1, c2 = timed_world(True, CONF6)
    full = []
    c1.session.receive = lambda d, now: full.append(d) or []
    c1.session._deliver = lambda out, items, event, now: full.append(items)
    for i in range(3):
        srv.tun_packet(ipv6(GW6, C1_6, b"lone %d" % i), w.now)
    for d, _ in take(srv.outbox):
        c1.datagram_received(d, w.now)
    assert not full and [bytes(p[40:]) for p in c1.to_tun] == [b"lone 0", b"lone 1", b"lone 2"]
    # ... and so do those from cam1's TUN, on cam1 and on the server.
    c1.session.encrypt = lambda packets, now: full.append(packets) or []
    srv.server.receive = lambda d, addr, now: full.append(d) or []
    srv.server._opened = lambda *a: full.append(a) or []
    for i in range(3):
        c1.tun_packet(ipv6(C1_6, GW6, b"up %d" % i), w.now)
    for d in take(c1.to_net):
        srv.datagram_received(d, A1, w.now)
    assert not full and [bytes(p[40:]) for p in srv.to_tun] == [b"up 0", b"up 1", b"up 2"]


# --- whole BULK frames: the server's flat frame path ---------------------------

def tcp4(src, dst, data: bytes) -> bytes:
    """An IPv4 TCP super-packet: a 20-byte TCP header, then `data`."""
    return ipv4(src, dst, bytes(12) + b"\x50" + bytes(7) + data, proto=6)


def sealed_frame(s, records, now, flags: int = 0):
    """One glued BULK frame (a Run) under `s`'s next counter, as a client's
    GSO send leaves and one GRO read brings it: (buffer, datagram size)."""
    (run,) = s.seal_frame(wire.pack_bulk_records(records), now, 1472, flags)
    return run.buf, run.size


def whole_frames(log):
    """Whole frames (three datagrams or more, as whole() takes them) to the
    server as bulk.FastReceiver.whole() gets them:
    each must give the same TUN writes, relays, counters and state by the
    flat frame path as by the full one."""
    w, srv, c1, c2 = log.w, log.srv, log.c1, log.c2
    w.now += 0.5
    peer = next(p for p in srv.server.peers.values() if p.client_id == "cam1")
    s = c1.session.current

    def feed(label, frame, addr=A1):
        buf, size = frame
        assert srv.datagram_received.whole(buf, size, addr, w.now), label
        out, _, _ = log.step(label)
        for x, a in out:
            if a == A2:
                c2.datagram_received(x, w.now)
                log.step((label, "c2 got"))
        w.now += 0.01

    def sealed(records, flags=0):
        """A frame sealed now: its counter is the next one, in order."""
        return sealed_frame(s, records, w.now, flags)

    local = sealed([(0, ipv4(C1, LOCAL, b"L" * 3500))])
    feed("local", local)
    feed("local again", local)
    feed("tcp", sealed([(1380, tcp4(C1, LOCAL, b"T" * 5000))]))
    genuine = sealed([(0, ipv4(C1, LOCAL, b"G" * 3500))])
    forged_frame = bytearray(genuine[0])
    forged_frame[-1] ^= 1
    feed("forged", (bytes(forged_frame), genuine[1]))
    feed("genuine", genuine)
    feed("relay", sealed([(0, ipv4(C1, C2, b"R" * 3500))]))
    # c2 sent the server something: a passive keepalive falls due, which
    # the relayed frame then answers
    c2.tun_packet(ipv4(C2, LOCAL, b"c2 up"), w.now)
    for d in log.step("c2 sent")[2]:
        srv.datagram_received(d, A2, w.now)
    log.step("server got c2's")
    peer2 = next(p for p in srv.server.peers.values() if p.client_id == "CAM2")
    assert peer2.ack_due is not None
    feed("relay tcp", sealed([(1380, tcp4(C1, C2, b"U" * 4000))]))
    feed("relay tcp to itself", sealed([(1380, tcp4(C1, C1, b"I" * 4000))]))
    # a destination whose path takes smaller frames: cut for it, as DATA
    max_frame = srv.server.max_frame
    srv.server.max_frame = 3000
    feed("relay tcp, smaller frames", sealed([(1380, tcp4(C1, C2, b"S" * 4000))]))
    srv.server.max_frame = max_frame
    # c2's session past the rekey age: relayed with the REKEY flag
    t = srv.server.t
    peer2.current.created -= t.rekey_after_time + 2 * t.handshake_retry
    feed("relay tcp, rekey age", sealed([(1380, tcp4(C1, C2, b"K" * 4000))]))
    peer2.current.created += t.rekey_after_time + 2 * t.handshake_retry
    first, second = (sealed([(0, ipv4(C1, LOCAL, b"O%d" % i * 1800))]) for i in range(2))
    feed("second first", second)
    feed("then the first", first)       # reordered: the full path takes it
    feed("first again", first)
    bad_length = bytearray(ipv4(C1, LOCAL, b"q" * 3500))
    bad_length[2:4] = (100).to_bytes(2, "big")   # the IPv4 header disagrees with the record
    bad_tcp = bytearray(tcp4(C1, LOCAL, b"t" * 5000))
    bad_tcp[2:4] = (100).to_bytes(2, "big")      # ... of a TCP super-packet: dropped
    short_tcp = bytearray(tcp4(C1, LOCAL, b"h" * 5000))
    short_tcp[32] = 0x40                          # a TCP data offset below 5 words
    others = [
        ("two records", [(0, ipv4(C1, LOCAL, b"a" * 1800)), (0, ipv4(C1, C2, b"b" * 1800))], 0),
        ("spoofed", [(0, ipv4("10.9.9.9", LOCAL, b"s" * 3500))], 0),
        ("unrouted", [(0, ipv4(C1, "10.0.0.77", b"n" * 3500))], 0),
        ("ipv6 record", [(0, bytes([0x60]) + bytes(39) + b"6" * 3500)], 0),
        # IPv6 whose source holds C1 and LOCAL where an IPv4 header has them
        ("ipv6 like ipv4", [(0, bytes([0x60]) + bytes(11) + bytes([10, 0, 0, 2, 10, 0, 0, 1])
                              + bytes(20) + b"7" * 3500)], 0),
        ("bad length", [(0, bad_length)], 0),
        ("tcp bad length", [(1380, bytes(bad_tcp))], 0),
        ("tcp bad data offset", [(1380, bytes(short_tcp))], 0),
        ("udp super-packet", [(1400, ipv4(C1, LOCAL, bytes(8) + b"u" * 5000))], 0),
        ("unknown flag", [(0, ipv4(C1, LOCAL, b"f" * 3500))], 0x40),
        ("rekey flag", [(0, ipv4(C1, LOCAL, b"k" * 3500))], wire.FLAG_REKEY),
    ]
    for label, records, flags in others:
        feed(label, sealed_frame(s, records, w.now, flags))
    # A record too short for an IPv4 header, its source bytes cam1's, in a
    # frame of tiny datagrams (a sender chooses their size): spoofed.
    short = b"\x45" + bytes(11) + bytes([10, 0, 0, 2]) + bytes(3)
    (run,) = s.seal_frame(wire.pack_bulk_records([(0, short)]), w.now, 30)
    feed("short ipv4 record", (run.buf, run.size))
    # roaming: a frame from elsewhere moves the endpoint (full path), the
    # next one from there is the flat path's again
    feed("roamed", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"M" * 3500))], w.now), A1B)
    feed("after roaming", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"N" * 3500))], w.now), A1B)
    assert peer.endpoint == A1B
    # a server without a TUN of its own drops what is for its address
    srv.local_delivery = False
    feed("no local delivery", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"W" * 3500))], w.now), A1B)
    srv.local_delivery = True
    # CLOSE from c2 in a frame: the server forgets c2, delivers nothing
    s2 = c2.session.current
    feed("CLOSE from c2", sealed_frame(s2, [(0, ipv4(C2, LOCAL, b"C" * 3500))], w.now,
                                       wire.FLAG_CLOSE), A2)
    # the receive limit: a frame at it is refused, one below it is taken
    limit = peer.current.recv_limit
    s.send_counter = limit
    s.send_limit = limit + 10
    feed("at the receive limit", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"X" * 3500))], w.now), A1B)
    s.send_counter = limit - 2
    feed("below the limit", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"Y" * 3500))], w.now), A1B)
    # reserved bytes set: malformed, even under the session's key (as AD)
    count = 3
    head = bytearray(wire.bulk_header(s.remote_index, limit - 1, count))
    head[18] = 1
    body = AEADS.get(s.send_key).encrypt(nonce_bytes(limit - 1), wire.pack_bulk_records(
        [(0, ipv4(C1, LOCAL, b"V" * 3500))]), bytes(head))
    glued = framing.glue_frame(bytes(head), body, 1472)
    assert len(glued.buf) > 2 * 1472
    feed("reserved byte", (glued.buf, glued.size), A1B)
    # past the reject age, the session's frames are stale (a counter above
    # the window's top, which the flat path would otherwise take)
    w.now = peer.current.created + srv.server.t.reject_after_time
    s.send_counter = limit - 1
    feed("too old", sealed_frame(s, [(0, ipv4(C1, LOCAL, b"Z" * 3500))], w.now), A1B)


def test_whole_frames_agree():
    entries = both(whole_frames)
    srv_tun = [p for e in entries for p in e[2]]
    # What the server's TUN got, in order: each frame once (the reordered
    # pair too), the TCP super-packet whole with its vnet header, nothing
    # forged, replayed, spoofed, past the receive limit or too old; an
    # unrouted destination goes to the server's own TUN, as do frames with
    # an unknown flag or REKEY (the IPv6 record: no IPv6 on this server).
    got = [(bytes(p[1][40:41]) if isinstance(p, tuple) else bytes(p[20:21])) for p in srv_tun]
    # (The UDP super-packet arrives cut into four datagrams: b"\x00" is
    # their UDP header's first byte.)
    assert got == [b"L", b"T", b"G", b"c", b"O", b"O", b"a", b"n", b"q"] + [b"\x00"] * 4 \
        + [b"f", b"k", b"M", b"N", b"Y"], got
    cut = [bytes(p) for p in srv_tun if not isinstance(p, tuple) and bytes(p[-1:]) == b"u"]
    assert len(cut) == 4 and sum(len(u) - 28 for u in cut) == 5000
    sup = [p for p in srv_tun if isinstance(p, tuple)]
    assert len(sup) == 1 and len(sup[0][1]) == 40 + 5000
    c2 = [bytes(p[20:21]) if not isinstance(p, tuple) else bytes(p[1][40:41])
          for e in entries for p in e[4]]
    assert c2[:2] == [b"R", b"U"] and b"b" in c2 and b"K" in c2 and b"I" not in c2
    last = [bytes(p[-1:]) if not isinstance(p, tuple) else bytes(p[1][-1:])
            for e in entries for p in e[4]]
    assert last.count(b"S") == 3       # (cut into DATA for the smaller frames)
    final = entries[-1][-1]
    stats, drops = final[0], final[1]
    # Refused and counted: the forgery, three replays (a frame twice, the
    # reordered pair's first again, the frame at the receive limit), the
    # frame past the reject age, four spoofed sources (the IPv4 one, the
    # IPv6 records' sources, none in cam1's grant, and the record too short
    # to hold a source); every other frame opened once.
    # The frame with a reserved byte set is malformed.
    assert (stats["forged"], stats["replay"], stats["stale"], stats["spoofed"],
            stats["malformed"]) == (1, 3, 1, 4, 1)
    # no TUN, and the frame to itself; c2 closed
    assert drops["no-route"] == 2 and "cam2" not in final[2]
    # c2's CLOSE opened too (counted by the server, not by a peer it forgot)
    assert stats["bulk_rx"] == final[2]["cam1"][0]["bulk_rx"] + 1 == 27
    assert final[2]["cam1"][3] == A1B   # roamed


def test_noframe_switch_turns_the_flat_frame_path_off(monkeypatch):
    """CAMEX_FASTPATH=noframe (for measuring it): whole frames take the
    full path, the lone DATA paths stay."""
    monkeypatch.setenv("CAMEX_FASTPATH", "noframe")
    _, srv, _, _ = timed_world(True)
    assert srv.frame_received == srv._frame_received and srv.seal_lone is not None
    monkeypatch.delenv("CAMEX_FASTPATH")
    _, srv, _, _ = timed_world(True)
    assert srv.frame_received != srv._frame_received


# --- super-packets from a client's TUN: the client's flat frame path -----------

def tun_read(core, hdr, packet, now) -> bool:
    """A TSO read, as camex.daemon.client hands it to the core: the flat
    frame path first, then (as ClientDaemon._super_packet) tun_super while
    the core is bulk_ready, else the packets cut for DATA. True if the
    flat path took it."""
    frame = core.tun_frame
    if frame is not None and frame(hdr, packet, now):
        return True
    if core.bulk_ready:
        core.tun_super(hdr, packet, now)
    else:
        for seg in netpkt.segment(hdr, packet):
            core.tun_packet(seg, now)
    return False


def tso(gtype: int, g: int, packet):
    return netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, gtype, 40, g, 20, 16)), packet


def client_frames(log):
    """c1's TUN hands over super-packets; each frame that leaves goes to the
    server (fragment by fragment), which delivers it. Every step's
    datagrams, TUN writes, counters and state must be the same by the
    flat path as by the full one."""
    w, srv, c1 = log.w, log.srv, log.c1
    w.now += 0.5
    took = []

    def read(label, hdr_packet):
        took.append(tun_read(c1, *hdr_packet, w.now))
        _, n1, _ = log.step(label)
        for d in n1:
            srv.datagram_received(d, A1, w.now)
        log.step((label, "server got"))
        w.now += 0.01

    tcp = netpkt.GSO_TCPV4
    for i in range(3):
        read(("steady", i), tso(tcp, 1380, tcp4(C1, LOCAL, b"%d" % i * 6000)))
    read("ecn", tso(tcp | netpkt.GSO_ECN, 1380, tcp4(C1, LOCAL, b"e" * 5000)))
    read("udp", tso(netpkt.GSO_UDP_L4, 1400, ipv4(C1, LOCAL, bytes(8) + b"u" * 5000)))
    read("ipv6", tso(netpkt.GSO_TCPV6, 1380, bytes([0x60, 0, 0, 0, 0x13, 0xa0, 6, 64])
                      + bytes(32) + bytes(12) + b"\x50" + bytes(7) + b"6" * 5000))
    # (a sane TCPv6 super-packet, its payload length right, under TCPV4)
    read("ipv6 under an ipv4 type", tso(tcp, 1380, bytes([0x60, 0, 0, 0, 0x13, 0x9c, 6, 64])
                                        + bytes(32) + bytes(12) + b"\x50" + bytes(7) + b"w" * 5000))
    read("no gso size", tso(tcp, 0, tcp4(C1, LOCAL, b"z" * 3000)))
    bad = bytearray(tcp4(C1, LOCAL, b"b" * 5000))
    bad[2:4] = (100).to_bytes(2, "big")
    read("bad length", tso(tcp, 1380, bytes(bad)))
    short_tcp = bytearray(tcp4(C1, LOCAL, b"d" * 5000))
    short_tcp[32] = 0x40          # a TCP data offset below 5 words
    read("bad data offset", tso(tcp, 1380, bytes(short_tcp)))
    c1.session.set_max_datagram(600)  # a frame of 64 fragments holds ~37 KB
    read("too large for the path", tso(tcp, 1380, tcp4(C1, LOCAL, b"L" * 40000)))
    c1.session.set_max_datagram(1472)
    config = c1.config
    c1.config = None
    read("not configured", tso(tcp, 1380, tcp4(C1, LOCAL, b"n" * 5000)))
    c1.config = config
    s = c1.session.current
    s.send_limit = s.send_counter + 1
    read("last before the send limit", tso(tcp, 1380, tcp4(C1, LOCAL, b"s" * 5000)))
    read("at the send limit", tso(tcp, 1380, tcp4(C1, LOCAL, b"S" * 5000)))
    return took


def test_client_frames_agree():
    took = []
    entries = both(lambda log: took.append(client_frames(log)))
    # The flat path took the steady stream, the ECN one and the last one
    # below the send limit, nothing else.
    assert took[0] == [True] * 4 + [False] * 8 + [True, False], took[0]
    assert all(not t for t in took[2])                    # (the full world)
    srv_tun = [p for e in entries for p in e[2]]
    got = [bytes(p[1][-1:]) if isinstance(p, tuple) else bytes(p[-1:]) for p in srv_tun]
    # (By the last byte: the payload's letter.) Each TCP super-packet
    # whole; the UDP one cut at the server; the IPv6 one refused there (no
    # IPv6 grant); the one without a GSO size dropped at the client; the
    # bad headers delivered as the records they are; the one too large for
    # the path cut into DATA; nothing from a client not configured yet; the
    # last before the send limit sent, the next one queued.
    assert got[:4] == [b"0", b"1", b"2", b"e"], got
    assert b"u" in got and b"6" not in got and b"z" not in got and b"n" not in got
    assert got.count(b"L") > 20 and b"s" in got and b"S" not in got


def client_frames_at_limits(log):
    """Frames until the rekey limit by message count, then by age, then
    past the reject age: the handshake starts where the full path starts
    it, and frames go on, or wait, as there."""
    w, srv, c1 = log.w, log.srv, log.c1
    took, held = [], []

    def read(label, text):
        took.append(tun_read(c1, *tso(netpkt.GSO_TCPV4, 1380,
                                      tcp4(C1, LOCAL, text * 4000)), w.now))
        _, n1, _ = log.step(label)
        for d in n1:
            if kind(d) == wire.T_BULK:
                srv.datagram_received(d, A1, w.now)
            else:
                held.append(d)         # INITs: held back until all eight are sent
        log.step((label, "server got"))

    for i in range(8):
        read(("count", i), b"c")
        w.now += 0.01
    for d in held:
        srv.datagram_received(d, A1, w.now)
    handshake_again(log, w, srv, c1, "new session")
    read("after the new session", b"a")
    w.now = c1.session.current.created + c1.session.t.rekey_after_time - 0.01
    read("just before the rekey age", b"b")
    w.now += 0.02
    read("at the rekey age", b"r")
    w.now = c1.session.current.created + c1.session.t.reject_after_time
    read("at the reject age", b"x")
    return took


def test_client_frames_at_the_limits_agree():
    took = []
    entries = both(lambda log: took.append(client_frames_at_limits(log)),
                   rekey_after_messages=6, reject_after_messages=1000)
    flat = took[0]
    # Below the rekey limit the flat path seals; from the frame that
    # reaches it on, the full path does (and starts the handshake).
    assert flat[:4] == [True] * 4 and not any(flat[4:8]), flat
    assert flat[8:10] == [True, True] and flat[10:] == [False, False], flat
    inits = [e[0] for e in entries if any(h[1] == wire.T_INIT for h, _ in e[5])]
    assert inits == [("count", 4), "at the rekey age"], inits
    got = [bytes(p[1][40:41]) for e in entries for p in e[2] if isinstance(p, tuple)]
    assert got.count(b"c") == 8 and got[-3:] == [b"a", b"b", b"r"], got


def test_noframe_switch_turns_the_client_frame_path_off(monkeypatch):
    monkeypatch.setenv("CAMEX_FASTPATH", "noframe")
    _, _, c1, _ = timed_world(True)
    assert c1.tun_frame is None and c1.frame_received == c1._frame_received
    assert c1.tun_packet != c1._tun_packet           # (the lone DATA paths stay)
    monkeypatch.delenv("CAMEX_FASTPATH")
    _, _, c1, _ = timed_world(True)
    assert c1.tun_frame is not None and c1.frame_received != c1._frame_received


# --- whole BULK frames from the server: the client's flat frame path -----------

def frames_to_a_client(log):
    """Whole frames from the server to c1 as bulk.FastReceiver.whole() gets
    them: each must give the same TUN writes, answers, counters and state
    by the flat frame path as by the full one."""
    w, srv, c1 = log.w, log.srv, log.c1
    w.now += 0.5
    peer = next(p for p in srv.server.peers.values() if p.client_id == "cam1")
    s = peer.current

    def feed(label, frame):
        buf, size = frame
        assert c1.datagram_received.whole(buf, size, w.now), label
        log.step(label)
        w.now += 0.01

    def sealed(records, flags=0):
        return sealed_frame(s, records, w.now, flags)

    # c1 sent something not answered yet: the next frame answers it
    c1.tun_packet(ipv4(C1, LOCAL, b"q"), w.now)
    log.step("c1 sent")
    assert c1.session.first_unanswered == w.now
    feed("tcp", sealed([(1380, tcp4(LOCAL, C1, b"T" * 5000))]))
    again = sealed([(1380, tcp4(LOCAL, C1, b"A" * 5000))])
    feed("tcp 2", again)
    feed("tcp 2 again", again)
    genuine = sealed([(1380, tcp4(LOCAL, C1, b"G" * 5000))])
    forged_frame = bytearray(genuine[0])
    forged_frame[-1] ^= 1
    feed("forged", (bytes(forged_frame), genuine[1]))
    feed("genuine", genuine)
    first, second = (sealed([(1380, tcp4(LOCAL, C1, b"O%d" % i * 2500))]) for i in range(2))
    feed("second first", second)
    feed("then the first", first)
    bad_tcp = bytearray(tcp4(LOCAL, C1, b"t" * 5000))
    bad_tcp[2:4] = (100).to_bytes(2, "big")
    short_tcp = bytearray(tcp4(LOCAL, C1, b"h" * 5000))
    short_tcp[32] = 0x40
    for label, records, flags in [
        ("packet", [(0, ipv4(LOCAL, C1, b"p" * 3500))], 0),
        ("udp super-packet", [(1400, ipv4(LOCAL, C1, bytes(8) + b"u" * 5000))], 0),
        ("two records", [(0, ipv4(LOCAL, C1, b"a" * 1800)), (1380, tcp4(LOCAL, C1, b"b" * 2000))],
         0),
        ("ipv6 record", [(0, bytes([0x60]) + bytes(39) + b"6" * 3500)], 0),
        ("tcp over ipv6", [(1380, tcp6(GW6, C1_6, b"v" * 5000))], 0),
        ("tcp bad length", [(1380, bytes(bad_tcp))], 0),
        ("tcp bad data offset", [(1380, bytes(short_tcp))], 0),
        ("unknown flag", [(1380, tcp4(LOCAL, C1, b"f" * 5000))], 0x40),
        ("rekey flag", [(1380, tcp4(LOCAL, C1, b"k" * 5000))], wire.FLAG_REKEY),
    ]:
        feed(label, sealed(records, flags))
    # reserved bytes set: malformed, even under the session's key (as AD)
    counter = s.send_counter
    s.send_counter += 1
    head = bytearray(wire.bulk_header(s.remote_index, counter, 4))
    head[18] = 1
    body = AEADS.get(s.send_key).encrypt(nonce_bytes(counter), wire.pack_bulk_records(
        [(1380, tcp4(LOCAL, C1, b"V" * 5000))]), bytes(head))
    glued = framing.glue_frame(bytes(head), body, 1472)
    feed("reserved byte", (glued.buf, glued.size))
    # the receive limit: a frame at it is refused, one below it is taken
    limit = c1.session.current.recv_limit
    s.send_limit = limit + 10
    s.send_counter = limit
    feed("at the receive limit", sealed([(1380, tcp4(LOCAL, C1, b"X" * 5000))]))
    s.send_counter = limit - 2
    feed("below the limit", sealed([(1380, tcp4(LOCAL, C1, b"Y" * 5000))]))
    # past the reject age, the session's frames are stale
    w.now = c1.session.current.created + c1.session.t.reject_after_time
    s.send_counter = limit - 1
    feed("too old", sealed([(1380, tcp4(LOCAL, C1, b"Z" * 5000))]))


def test_whole_frames_to_a_client_agree():
    entries = both(frames_to_a_client)
    tun = [p for e in entries for p in e[3]]
    got = [bytes(p[1][-1:]) if isinstance(p, tuple) else bytes(p[-1:]) for p in tun]
    # Each frame once, the TCP super-packets whole (the reordered pair too);
    # nothing forged, replayed, malformed, past the receive limit or too
    # old; the UDP super-packet cut; no IPv6 (c1 has no IPv6 address).
    assert got[:5] == [b"T", b"A", b"G", b"1", b"0"], got
    assert got[5:] == [b"p"] + [b"u"] * 4 + [b"a", b"b", b"f", b"k", b"Y"], got
    assert sum(isinstance(p, tuple) for p in tun) == 9
    final = entries[-1][-1][-1][0]          # c1's state at the end
    stats = final[7]
    # Refused and counted: the forgery, two replays (a frame twice, the
    # frame at the receive limit), the frame past the reject age, the
    # reserved byte; dropped: the two IPv6 records (a packet, a TCP
    # super-packet), the two bad TCP headers.
    assert (stats["forged"], stats["replay"], stats["stale"], stats["malformed"]) == (1, 2, 1, 1)
    assert final[4] == {"not-ipv4": 2, "bad-record": 2}
    # The REKEY flag started a handshake.
    assert any(h[1] == wire.T_INIT for e in entries if e[0] == "rekey flag" for h, _ in e[5])


# --- a TCP stream over IPv6 inside: the three flat frame paths -----------------

CONF66 = CONF6.replace("local_cidr = 10.0.0.3/24", "local_cidr = 10.0.0.3/24\nlocal_cidr = fd00:c::3/64")
C2_6 = "fd00:c::3"


def tcp6(src, dst, data: bytes) -> bytes:
    """An IPv6 TCP super-packet: a 20-byte TCP header right after the
    fixed header, then `data`."""
    return ipv6(src, dst, bytes(12) + b"\x50" + bytes(7) + data, proto=6)


def _arrive(receive, datagrams, *rest) -> None:
    """Datagrams as a GRO read brings them: one whole frame of three or
    more in one read (bulk.FastReceiver.whole), anything else one by one."""
    if len(datagrams) > 2 and all(kind(d) == wire.T_BULK for d in datagrams) \
            and len({bytes(d[4:16]) for d in datagrams}) == 1:
        assert receive.whole(b"".join(datagrams), len(datagrams[0]), *rest)
    else:
        for d in datagrams:
            receive(d, *rest)


def ipv6_stream(log):
    """cam1 and cam2 both have IPv6 addresses. TCPv6 super-packets from
    c1's TUN (the client's frame path), through the server (its frame path
    and the relay's re-seal) to c2 (its frame path): the steady stream and
    what must leave it - the server's own address, an unrouted one, c1
    itself, a spoofed source, a destination whose path takes smaller
    frames; then frames sealed at c1 with records the flat paths must hand
    on (UDP over IPv6, a payload length that disagrees, two records)."""
    w, srv, c1, c2 = log.w, log.srv, log.c1, log.c2
    w.now += 0.5
    took = []

    def hop_on(label, n1):
        _arrive(srv.datagram_received, n1, A1, w.now)
        out, _, _ = log.step((label, "server got"))
        _arrive(c2.datagram_received, [x for x, a in out if a == A2], w.now)
        log.step((label, "c2 got"))
        w.now += 0.01

    def read(label, packet, gtype=netpkt.GSO_TCPV6):
        took.append(tun_read(c1, *tso(gtype, 1380, packet), w.now))
        hop_on(label, log.step(label)[1])

    for i in range(3):
        read(("stream", i), tcp6(C1_6, C2_6, b"%d" % i * 6000))
    read("ecn", tcp6(C1_6, C2_6, b"e" * 5000), netpkt.GSO_TCPV6 | netpkt.GSO_ECN)
    read("to the server's address", tcp6(C1_6, GW6, b"g" * 5000))
    read("unrouted", tcp6(C1_6, "fd00:c::77", b"n" * 5000))
    read("to itself", tcp6(C1_6, C1_6, b"i" * 5000))
    read("spoofed", tcp6("fd00:c::77", C2_6, b"s" * 5000))
    read("tcpv6 under a udp type", tcp6(C1_6, C2_6, b"w" * 5000), netpkt.GSO_UDP_L4)
    max_frame = srv.server.max_frame
    srv.server.max_frame = 3000
    read("smaller frames", tcp6(C1_6, C2_6, b"m" * 5000))
    srv.server.max_frame = max_frame
    s = c1.session.current
    bad = bytearray(tcp6(C1_6, C2_6, b"b" * 5000))
    bad[4:6] = (100).to_bytes(2, "big")        # the payload length disagrees
    udp6 = ipv6(C1_6, C2_6, bytes(8) + b"u" * 5000)
    for label, records in [
        ("udp over ipv6", [(1400, udp6)]),
        ("bad payload length", [(1380, bytes(bad))]),
        ("two records", [(1380, tcp6(C1_6, C2_6, b"x" * 2000)), (1380, tcp6(C1_6, C2_6, b"y" * 2000))]),
    ]:
        buf, size = sealed_frame(s, records, w.now)
        hop_on(label, [buf[i:i + size] for i in range(0, len(buf), size)])
    # A record too short for an IPv6 header, its source bytes cam1's, in
    # a frame of tiny datagrams (a sender chooses their size): spoofed.
    import ipaddress
    short = b"\x60" + bytes(7) + ipaddress.IPv6Address(C1_6).packed + bytes(6)
    (run,) = s.seal_frame(wire.pack_bulk_records([(0, short)]), w.now, 36)
    hop_on("short ipv6 record", [run.buf[i:i + 36] for i in range(0, len(run.buf), 36)])
    return took


def test_a_tcp_stream_over_ipv6_agrees():
    took = []
    entries = both(lambda log: took.append(ipv6_stream(log)), CONF66)
    # c1's flat path seals every TCPv6 super-packet its TUN hands over as
    # one (not the one under a UDP type: the full path drops that).
    assert took[0] == [True] * 8 + [False, True] and took[2] == [False] * 10
    c2_tun = [p for e in entries for p in e[4]]
    whole = [p for p in c2_tun if isinstance(p, tuple)]
    # The stream, the ECN one and the two records arrive at c2's TUN whole,
    # as GSO_TCPV6 writes (TCP header at 40, checksum at 16 in it); the one
    # for smaller frames cut into DATA; nothing else reaches c2.
    assert [bytes(p[1][-1:]) for p in whole] == [b"0", b"1", b"2", b"e", b"x", b"y"]
    for p in whole:
        flags, gtype, hdr_len, g, start, offset = netpkt.VNET_HDR.unpack(bytes(p[0]))
        assert (gtype, hdr_len, g, start, offset) == (netpkt.GSO_TCPV6, 60, 1380, 40, 16)
    cut = [bytes(p) for p in c2_tun if not isinstance(p, tuple)]
    assert {p[-1:] for p in cut} <= {b"m", b"u"} and sum(p[-1:] == b"m" for p in cut) == 4
    final = entries[-1][-1]
    stats, drops = final[0], final[1]
    assert stats["spoofed"] == 2 and drops["no-route"] >= 1


def test_a_tcp_stream_over_ipv6_takes_the_flat_paths():
    """The stream's frames take no step of the full paths: not the
    client's encrypt_frame, not the server's receive_frame, _authenticated
    or send_frame, not c2's receive_frame or _authenticated."""
    w, srv, c1, c2 = timed_world(True, CONF66)
    full = []
    c1.session.encrypt_frame = lambda *a: full.append("encrypt_frame")
    srv.server.receive_frame = lambda *a: full.append("receive_frame") or []
    srv.server._authenticated = lambda *a: full.append("_authenticated")
    srv.server.send_frame = lambda *a: full.append("send_frame")
    c2.session.receive_frame = lambda *a: full.append("c2 receive_frame") or []
    c2.session._authenticated = lambda *a: full.append("c2 _authenticated") or ([], False)
    packet = tcp6(C1_6, C2_6, b"flat" * 1500)
    assert tun_read(c1, *tso(netpkt.GSO_TCPV6, 1380, packet), w.now)
    _arrive(srv.datagram_received, datagrams_of(take(c1.to_net)), A1, w.now)
    to_c2 = [x for d, a in take(srv.outbox) for x in datagrams_of([d]) if a == A2]
    _arrive(c2.datagram_received, to_c2, w.now)
    assert not full
    (sp,) = c2.to_tun
    assert bytes(sp[1]) == packet
