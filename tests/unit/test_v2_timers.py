"""v2 server timers with many clients: next_timer() gives what a walk over
every peer gives, and on_timer() does what that walk did, in the same order.

A scripted world (fake clock, no sockets): thousands of clients handshake,
send data, get data, roam, rekey, close, fall silent (their sessions expire
on the server), and strangers leave handshakes unconfirmed. After every
step the server's next_timer() is compared with a reference walk kept here
(the server's code before its timer heaps): never later, and earlier only
where a passive keepalive was answered since it was armed (the heap keeps
that entry: it fires early, finds nothing due and re-arms, instead of a
heap operation after every answered datagram). A second world whose
server still walks (RefServer) must say exactly the same things, datagram
for datagram, as the real one.
"""

import ipaddress
import random

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.events import Deliver, DeliverFrame, Down, Roamed, Send
from camex.testing.memlab import det_rng, ipv4
from camex.v2.server import V2Server, grant_for
from camex.v2.session import Timers

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

PSK = b"T" * 32
# Short protocol times, so that expiry, rekeys and keepalives all happen.
T = dict(rekey_after_time=20.0, reject_after_time=30.0, passive_keepalive=2.0,
         keepalive=0.0, dead_after=15.0, handshake_retry=1.0)


def reference_next_timer(srv):
    """next_timer() as a walk over every peer and pending handshake."""
    t = []
    for p in srv.peers.values():
        if p.ack_due is not None:
            t.append(p.ack_due)
        for s in (p.current, p.previous):
            if s is not None:
                t.append(s.created + srv.t.reject_after_time)
    for idx in srv.pending_by_key.values():
        t.append(srv.sessions[idx].session.created + srv.t.rekey_after_time)
    return min(t) if t else None


class RefServer(V2Server):
    """The server with its timers found by walking every peer (as before
    the heaps): the behaviour the real one must keep. (What one peer's due
    timers do, _fire_peer, is the same code: what differs is which peers
    are looked at, when, and in which order.)"""

    def next_timer(self):
        return reference_next_timer(self)

    def on_timer(self, now):
        out = []
        for p in list(self.peers.values()):   # every peer, due or not
            out += self._fire_peer(p, now)
        for key, idx in list(self.pending_by_key.items()):
            if self.sessions[idx].session.age(now) >= self.t.rekey_after_time:
                self._forget_pending(key)
        horizon = now - self.t.reject_after_time
        while self.seen_e and next(iter(self.seen_e.values())) < horizon:
            self.seen_e.popitem(last=False)
        return out


def addr_of(i: int) -> str:
    return str(ipaddress.IPv4Address("10.64.0.0") + i + 1)


class World:
    """One server and its clients on a fake clock; every server output
    is logged in a comparable form and routed to the client it is for."""

    def __init__(self, server_cls, seed: bytes = b"w"):
        self.rng = det_rng(seed)
        self.srv = server_cls(lambda cid: PSK,
                              lambda cid, req: grant_for(req, None, ()),
                              timers=Timers(**T), rng=self.rng, load_threshold=10**9,
                              keygen=self._keygen)
        self.now = 1000.0
        self.clients = {}     # i -> ClientSession
        self.ep = {}          # i -> endpoint
        self.by_ep = {}       # endpoint -> i
        self.log = []
        self.timer_fired = []   # (time, next_timer() it was asked for)
        self.timer_sends = 0    # datagrams on_timer sent (passive keepalives)

    def _keygen(self):
        return X25519PrivateKey.from_private_bytes(self.rng(32))

    def add(self, i: int, port: int):
        c = ClientSession([PSK], f"c{i}", wire.Request(
            auto=False, local_cidr=ipaddress.IPv4Interface(f"{addr_of(i)}/16")),
            timers=Timers(**T), rng=self.rng, keygen=self._keygen)
        self.clients[i] = c
        self.move(i, ("192.0.2.1", port))
        return c

    def move(self, i, ep):
        self.by_ep.pop(self.ep.get(i), None)
        self.ep[i] = ep
        self.by_ep[ep] = i

    def to_server(self, i, datagrams):
        for d in datagrams:
            self.server_said(self.srv.receive(d, self.ep[i], self.now))

    def server_said(self, actions):
        for a in actions:
            if isinstance(a, Send):
                self.log.append(("send", self.now, bytes(a.data), a.addr))
                i = self.by_ep.get(a.addr)
                if i is not None:
                    self.client_said(i, self.clients[i].receive(a.data, self.now))
            elif isinstance(a, (Deliver, DeliverFrame)):
                self.log.append(("deliver", self.now, a.peer.key))
            elif isinstance(a, Roamed):
                self.log.append(("roamed", self.now, a.peer.key, a.old, a.new))
            else:
                self.log.append((type(a).__name__, self.now, a.peer.key,
                                 getattr(a, "reason", None)))

    def client_said(self, i, actions):
        self.to_server(i, [a.data for a in actions if isinstance(a, Send)])

    def fire_server(self):
        for _ in range(8):
            t = self.srv.next_timer()
            if t is None or t > self.now:
                return
            self.timer_fired.append((self.now, t))
            out = self.srv.on_timer(self.now)
            self.timer_sends += sum(isinstance(a, Send) for a in out)
            self.server_said(out)

    def fire_clients(self, which):
        for i in which:
            c = self.clients[i]
            t = c.next_timer()
            if t is not None and t <= self.now:
                self.client_said(i, c.on_timer(self.now))


def scenario(w: World, n: int, check, seed: int = 7) -> None:
    """Handshakes, data both ways, roaming, rekeys, silence (expiry),
    CLOSE, unconfirmed handshakes; `check(w)` after every kind of event."""
    r = random.Random(seed)
    for i in range(n):
        w.now += 0.002
        c = w.add(i, 20000 + i)
        w.client_said(i, c.start(w.now))
        if i % 500 == 0:
            check(w)
    check(w)
    silent = set(r.sample(range(n), n // 4))   # never fire their timers: they expire
    stranger = n
    for step in range(100):                    # 50 s in steps of 0.5 s
        w.now += 0.5
        live = sorted(w.clients)
        for i in r.sample(live, min(len(live), 60)):   # data to the server
            ip = addr_of(i)
            w.to_server(i, w.clients[i].encrypt([ipv4(ip, "10.64.0.1", b"up")], w.now))
        check(w)
        for i in r.sample(live, min(len(live), 30)):   # data from the server
            peer = w.srv.route(ipaddress.IPv4Address(addr_of(i)).packed)
            if peer is not None:
                for d, addr in w.srv.send(peer, [ipv4("10.64.0.1", addr_of(i), b"dn")], w.now):
                    w.log.append(("data", w.now, d, addr))
                    w.clients[i].receive(d, w.now)
        check(w)
        # The server answers the peers whose keepalives are due first: the
        # earliest timer moves back (the heap's top goes stale).
        acks = [p.ack_due for p in w.srv.peers.values() if p.ack_due is not None]
        first = [p for p in w.srv.peers.values() if acks and p.ack_due == min(acks)
                 and step % 2]
        for peer in first:
            w.log.extend(("data", w.now, d, addr) for d, addr in w.srv.send(
                peer, [ipv4("10.64.0.1", str(peer.grant.address), b"first")], w.now))
        check(w)
        for k, i in enumerate(r.sample(live, 3)):        # roaming
            w.move(i, ("198.51.100.9", 30000 + step * 3 + k))
            w.to_server(i, w.clients[i].encrypt([ipv4(addr_of(i), "10.64.0.1", b"moved")], w.now))
        check(w)
        if step % 4 == 1:                                # a client leaves with a CLOSE
            i = r.choice(live) if step % 8 == 1 else min(   # (or the next to expire)
                live, key=lambda i: w.clients[i].current.created if w.clients[i].current else 1e18)
            w.by_ep.pop(w.ep[i])     # (a NOSESSION hint in answer goes nowhere)
            w.to_server(i, w.clients.pop(i).close(w.now))
            silent.discard(i)
            check(w)
        if step % 3 == 0:                                # a handshake nobody confirms
            c = w.add(stranger, 40000 + stranger)
            for a in c.start(w.now):
                w.srv.receive(a.data, w.ep[stranger], w.now)   # the RESP is lost
            del w.clients[stranger]
            stranger += 1
            check(w)
        w.fire_clients([i for i in sorted(w.clients) if i not in silent])
        check(w)
        w.fire_server()
        check(w)


def outcome(w: World) -> dict:
    kinds = {}
    for e in w.log:
        k = e[0] if e[0] != "Down" else f"Down {e[3]}"
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


def test_next_timer_matches_a_walk_over_5000_peers():
    w = World(V2Server)
    checks = []

    early = []

    def check(w):
        t, ref = w.srv.next_timer(), reference_next_timer(w.srv)
        assert (t is None) == (ref is None)
        if t is not None and t != ref:
            assert t < ref
            early.append(t)
            # An early deadline is an answered keepalive's: the heap's top
            # is a live entry of a peer whose next timer moved back.
            top = w.srv._timers[0]
            assert top[0] == t == top[2].timer_at
        checks.append(w.now)
    scenario(w, 5000, check)
    # The scenario answers keepalives, so early deadlines happen (the check
    # above would pass on an exact next_timer() alone otherwise).
    assert early
    seen = outcome(w)
    # The scenario did reach every timer and every change of peers.
    assert seen["Down session expired"] >= 1000            # the silent quarter
    assert seen["Down client closed the session"] >= 10
    assert seen["roamed"] >= 200
    assert w.timer_sends >= 1000    # passive keepalives, from on_timer
    assert w.srv.stats["handshakes"] > 5000                 # rekeys and strangers
    assert any(p.previous is not None for p in w.srv.peers.values())  # after rekeys
    assert len(checks) > 500
    # Nothing due is left behind after the timers fired: the next timer
    # is in the future (every peer's passive keepalive went out).
    assert w.srv.next_timer() > w.now
    # The heap holds about one entry per peer, not one per event.
    assert len(w.srv._timers) <= 2 * len(w.srv.peers) + 1024


def test_same_datagrams_and_events_as_the_walking_server():
    a, b = World(V2Server, b"same"), World(RefServer, b"same")
    asked = []

    def check(w):
        asked.append((w is a, w.now, w.srv.next_timer()))
    scenario(a, 600, check)
    scenario(b, 600, check)
    mine, ref = [x[1:] for x in asked if x[0]], [x[1:] for x in asked if not x[0]]
    assert len(mine) == len(ref)
    assert all((m is None) == (r is None) and (m is None or m <= r)
               for (_, m), (_, r) in zip(mine, ref))
    # Every firing of the walking server happened in this world too (and
    # some more, early ones that found nothing due and said nothing).
    assert {x[0] for x in b.timer_fired} <= {x[0] for x in a.timer_fired}
    assert len(b.timer_fired) > 50
    assert a.log == b.log      # same datagrams, same order, same events
    seen = outcome(a)
    assert seen["Down session expired"] >= 30 and seen["roamed"] >= 100
    assert seen["Down client closed the session"] >= 10
    assert a.timer_sends >= 500      # passive keepalives, from on_timer


def test_timers_fire_in_order_and_never_early():
    """Each peer's expiry fires at the first on_timer at or after its
    time, never before; a rekeyed peer keeps its new session."""
    w = World(V2Server, b"order")
    for i in range(300):
        w.now += 0.01
        w.client_said(i, w.add(i, 20000 + i).start(w.now))
    created = {p.key: p.current.created for p in w.srv.peers.values()}
    w.now += 10.0
    for i in range(0, 300, 2):       # half send data: passive keepalive due 2 s later
        w.to_server(i, w.clients[i].encrypt([ipv4(addr_of(i), "10.64.0.1", b"x")], w.now))
    sent_at = w.now
    w.now += 1.999
    assert w.srv.on_timer(w.now) == []          # nothing due yet
    w.now = sent_at + 2.0
    acks = w.srv.on_timer(w.now)
    assert len(acks) == 150 and all(isinstance(a, Send) for a in acks)
    assert {a.addr for a in acks} == {w.ep[i] for i in range(0, 300, 2)}
    downs = []
    while len(w.srv.peers):
        t = w.srv.next_timer()
        assert t == reference_next_timer(w.srv)
        w.now = t
        for a in w.srv.on_timer(t):
            assert isinstance(a, Down) and a.reason == "session expired"
            assert created[a.peer.key] + T["reject_after_time"] <= t
            downs.append((t, a.peer.key))
    assert len(downs) == 300
    assert downs == sorted(downs, key=lambda d: (created[d[1]], d[1]))
    assert w.srv.next_timer() is None


def test_expiry_at_a_time_where_float_rounding_disagrees():
    """created + 30 rounds above `now` while now - created >= 30: the
    walking server expired the session at that `now`; so must this one."""
    c, n = 0.6532276962299033, 30.6532276962299
    assert n - c >= T["reject_after_time"] and c + T["reject_after_time"] > n
    outs = []
    for cls in (V2Server, RefServer):
        w = World(cls, b"round")
        w.now = c
        w.client_said(0, w.add(0, 20000).start(w.now))
        assert len(w.srv.peers) == 1
        out = w.srv.on_timer(n)
        outs.append([(type(a).__name__, getattr(a, "reason", None)) for a in out])
        assert w.srv.next_timer() is None
    assert outs[0] == outs[1] == [("Down", "session expired")]


def test_unconfirmed_handshakes_expire_alike_even_if_the_clock_went_back():
    """Pending handshakes expire oldest first; with a clock that went back
    (a test's, never the daemon's monotonic one) the answers still match
    the walk."""
    for times in ([10.0, 11.0, 12.5, 12.5, 14.0], [10.0, 5.0, 12.0, 7.0, 11.0]):
        got = []
        for cls in (V2Server, RefServer):
            w = World(cls, b"pending")
            seen = []
            for i, t in enumerate(times):
                w.now = t
                for a in w.add(i, 20000 + i).start(t):
                    w.srv.receive(a.data, w.ep[i], t)     # no RESP ever arrives
            assert len(w.srv.pending_by_key) == len(times)
            for now in (24.0, 26.0, 30.0, 31.9, 32.0, 40.0):
                seen.append((now, w.srv.next_timer(), sorted(w.srv.pending_by_key)))
                w.srv.on_timer(now)
            seen.append(w.srv.next_timer())
            got.append(seen)
        assert got[0] == got[1]
        assert got[0][0][1] == min(times) + T["rekey_after_time"]
        assert got[0][-1] is None
