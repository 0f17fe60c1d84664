"""The v2 server state machine (sans-I/O).

    srv = V2Server(psk_for, authorize)
    actions = srv.receive(datagram, addr, now)   # Send / Deliver / Up / Down / Roamed
    pairs = srv.send(peer, packets, now)         # fast path: [(datagram, addr)]
    pairs = srv.send_frame(peer, records, now)   # BULK frames, or None: peer takes DATA only
    peer = srv.route(dst_ip)                     # which peer owns a tunnel address
    t = srv.next_timer(); actions = srv.on_timer(now)    # cheap with many peers: see Timers below
    actions = srv.close(now)                     # CLOSE to every peer (shutdown)
    actions = srv.reload(psk_for, authorize, now)

`psk_for(client_id) -> bytes | None` is the key store (kdf.KeyStore):
exactly one PSK per client ID, computed beforehand, so each INIT costs one
MAC check and at most one AEAD open. `authorize(client_id, request) ->
Grant | wire.Refusal` is the profile lookup (see `grant_for`).

A DATA datagram names its session by index: one dict lookup, one AEAD
attempt. Peers are keyed by their client ID (lower-cased) or, for a client
without an ID, by its tunnel address; a peer's endpoint moves only after an
authenticated, replay-checked DATA datagram.

Timers cost the same with 10,000 clients as with two: next_timer() is
O(1) amortised and on_timer() touches only the peers that are due.
- Peers' timers (passive keepalive, session expiry) live in a heap with
  lazy invalidation. A peer has at most one live entry, at `timer_at`,
  never later than its earliest timer: an event that brings a timer
  forward pushes a new entry (the old one is dead: its time is no longer
  `timer_at`); one that pushes timers back (data sent, a session gone)
  changes nothing: the entry fires early, on_timer finds nothing due and
  arms the peer's true next time (a peer with no timer left is dropped at
  the top, `_peer_top`). So a round trip of data costs no heap operation:
  the keepalive armed by its first datagram stays armed. Dead entries are
  dropped at the top, or all at once when they outnumber the live ones
  (`_compact`).
- Pending handshakes expire in the order they came (`pending_by_key` is in
  that order, and they all live equally long), so the first one is the
  next to expire. Only a clock that went backwards breaks that order;
  then they are walked as before until none is left (`_pend_disorder`).
"""

from __future__ import annotations

import heapq
import ipaddress
import os
import struct
from typing import Any, Callable
from collections import OrderedDict

from .framing import Reassembly
from ..base.endpoint import fmt, outer_ip_udp
from ..base.value import Value
from . import bulk, wire
from .cookie import CookieMaker, LoadMeter
from .events import Deliver, DeliverFrame, Down, Roamed, Send, Up
from .noise import HandshakeState, NoiseError
from .session import FORGED, Session, Timers, data_keys, keylog_lines

LOAD_THRESHOLD = 50      # DH handshakes per second before cookies are required
MAX_PENDING = 4096       # handshakes answered but not yet confirmed
REPLAY_CACHE = 8192      # INIT ephemerals remembered (replayed INITs cost no DH)
NOSESSION_INTERVAL = 1.0  # per source address
NOSESSION_PER_SECOND = 100
INITS_PER_ADDRESS = 10   # under load: DH handshakes per second every source IP may have
# Under load, DH handshakes per second beyond those, for whichever
# addresses ask first: a site of many cameras behind one NAT address comes
# back after a restart at up to INITS_PER_ADDRESS + SPARE_INITS a second,
# not 10. An accepted handshake costs the server ~0.18 ms (X25519 twice,
# the keys, the grant), so the spare is at most ~4 % of a core, and no
# address loses its own 10 to it.
SPARE_INITS = 200
FRAME_SLOTS = 32         # BULK frames being reassembled, all clients together
FRAME_SLOTS_PER_SESSION = 4
FRAME_TIMEOUT = 1.0      # seconds a BULK frame may take to arrive whole
HEAP_SPARE = 64          # dead timer entries tolerated beyond twice the live ones
# on_timer looks at heap entries due up to this much after `now` and decides
# with the exact age checks: a timer computed as created + limit may round
# differently from now - created >= limit.
TIMER_SLACK = 1e-6


V6 = 1 << 128   # by_address keys of IPv6 addresses: int(address) | V6 (never an IPv4 key)


def addr_key(address) -> int:
    """The by_address / reserved key of an ipaddress address of either family."""
    return int(address) | V6 if address.version == 6 else int(address)


class Grant(Value):
    """What a client may do: its tunnel address (IPv4 if it has one, else
    IPv6) and its other one (`extra`: the IPv6 address of a dual-stack
    client), the inner source networks it may use (its addresses and
    networks behind it), and the configuration pushed to it in the RESP
    (auto mode; None for a manual client). One per client (__slots__);
    compared by value on a reload. A plain class rather than a dataclass:
    `dataclasses` imports `inspect`, 1.2 MiB resident."""
    __slots__ = ("address", "allowed", "config", "extra")

    def __init__(self, address, allowed: list | None = None,
                 config: wire.Config | None = None, extra: tuple = ()):
        self.address = address
        self.extra = tuple(extra)
        self.allowed = [] if allowed is None else allowed
        self.config = config
        hosts = [ipaddress.ip_network((a, a.max_prefixlen)) for a in (address,) + self.extra]
        missing = [h for h in hosts if h not in self.allowed]
        if missing:
            self.allowed = missing + list(self.allowed)

    @property
    def addresses(self) -> tuple:
        return (self.address,) + self.extra


_OLD_CLIENT = ("this client does not carry IPv6 inside the tunnel (handshake payload "
               "version 1: an older camex, or camex.ko's TUN); its profile has only an "
               "IPv6 address")


def grant_for(request: wire.Request, profile, behind=()):
    """The default policy, from a config.Profile (or None) and the networks
    configured behind the client:
    - auto: the profile must give a local_cidr and a gateway_ip of one
      family at least (IPv4, IPv6 or both); they, its routes and MTU are
      pushed to the client. A client of payload version 1 gets the IPv4
      part only, and is refused clearly if there is none;
    - manual: the client names its address(es); if the profile pins one of
      a family, it must be that one.
    IPv6 is granted only to a client that announced payload version 2."""
    v6 = request.version >= wire.PAYLOAD_VERSION
    pinned = getattr(profile, "local_cidr", None)
    pinned6 = getattr(profile, "local_cidr6", None)
    if request.auto:
        gw, gw6 = getattr(profile, "gateway_ip", None), getattr(profile, "gateway_ip6", None)
        four = pinned is not None and gw is not None
        six = v6 and pinned6 is not None and gw6 is not None
        if not four and not six:
            if not v6 and pinned6 is not None and gw6 is not None:
                return wire.Refusal(wire.ERR_CONFIG, _OLD_CLIENT)
            return wire.Refusal(wire.ERR_CONFIG, "no local_cidr/gateway_ip for this client")
        routes = [r for r in (profile.routes or []) if (r.version == 4 and four)
                  or (r.version == 6 and six)]
        cfg = wire.Config(pinned if four else None, gw if four else None, routes, profile.mtu,
                          local_cidr6=pinned6 if six else None, gateway_ip6=gw6 if six else None,
                          version=wire.PAYLOAD_VERSION if v6 else wire.PAYLOAD_V1)
        addrs = ([pinned.ip] if four else []) + ([pinned6.ip] if six else [])
        return Grant(addrs[0], _behind_of(behind, v6), cfg, tuple(addrs[1:]))
    local6 = request.local_cidr6 if v6 else None
    if request.local_cidr is None and local6 is None:
        return wire.Refusal(wire.ERR_REQUEST, "manual client without an address")
    if pinned is not None and request.local_cidr is not None \
            and pinned.ip != request.local_cidr.ip:
        return wire.Refusal(wire.ERR_ADDRESS, "address not allowed for this client")
    if pinned6 is not None and local6 is not None and pinned6.ip != local6.ip:
        return wire.Refusal(wire.ERR_ADDRESS, "IPv6 address not allowed for this client")
    mtu = getattr(profile, "mtu", None)
    cfg = wire.Config(mtu=mtu) if mtu else None
    if cfg is not None and v6:
        cfg.version = wire.PAYLOAD_VERSION
    addrs = [a.ip for a in (request.local_cidr, local6) if a is not None]
    return Grant(addrs[0], _behind_of(behind, v6), cfg, tuple(addrs[1:]))


def _behind_of(behind, v6: bool) -> list:
    return [n for n in behind if v6 or n.version == 4]


class Peer:
    """A client as the server knows it, across its successive sessions."""

    __slots__ = ("key", "client_id", "psk", "request", "grant", "endpoint",
                 "current", "previous", "ack_due", "_allowed", "_allowed6", "stats",
                 "seq", "timer_at", "since")

    def __init__(self, key, client_id, psk, request, grant):
        self.key, self.client_id, self.psk, self.request = key, client_id, psk, request
        self.endpoint = None
        self.current: Session | None = None
        self.previous: Session | None = None
        self.ack_due = None
        self.seq = 0             # order of arrival in V2Server.peers (set there)
        self.timer_at = None     # time of this peer's live timer heap entry
        self.since = None        # connected since (its first session; set by the server)
        self.stats = {"rx": 0, "tx": 0, "rx_bytes": 0, "tx_bytes": 0,
                      "spoofed": 0, "replay": 0, "forged": 0, "bulk_rx": 0, "bulk_tx": 0}
        self.set_grant(grant)

    def set_grant(self, grant: Grant) -> None:
        self.grant = grant
        # Per family: an IPv4 source is never compared with an IPv6 network.
        self._allowed = [(int(n.network_address), int(n.netmask)) for n in grant.allowed
                         if n.version == 4]
        self._allowed6 = [(int(n.network_address), int(n.netmask)) for n in grant.allowed
                          if n.version == 6]

    def allows_source(self, packet) -> bool:
        """Identity binding: may this peer send an inner packet with this
        source address? IPv4 or IPv6 with a source inside its grant."""
        if len(packet) < 20:
            return False
        v = packet[0] >> 4
        if v == 4:
            src = int.from_bytes(packet[12:16], "big")
            for net, mask in self._allowed:
                if src & mask == net:
                    return True
            return False
        if v == 6 and len(packet) >= 40:
            src = int.from_bytes(packet[8:24], "big")
            for net, mask in self._allowed6:
                if src & mask == net:
                    return True
        return False

    @property
    def bulk(self) -> bool:
        """Did the client announce that it takes BULK frames?"""
        return bool(self.request.features & wire.FEATURE_BULK)

    def describe(self) -> str:
        who = self.client_id or "-"
        ep = fmt(self.endpoint)
        return f"{who} {' '.join(map(str, self.grant.addresses))} at {ep}"


class _Pending:
    """A session answered with a RESP and waiting for the client's first DATA."""
    __slots__ = ("session", "key", "client_id", "psk", "request", "grant")

    def __init__(self, session, key, client_id, psk, request, grant):
        self.session, self.key, self.client_id = session, key, client_id
        self.psk, self.request, self.grant = psk, request, grant


def peer_key(client_id: str, grant: Grant) -> str:
    return client_id.lower() if client_id else f"addr:{grant.address}"


class V2Server:
    def __init__(self, psk_for, authorize, *, timers: Timers | None = None,
                 rng=os.urandom, load_threshold: int = LOAD_THRESHOLD,
                 spare_inits: int = SPARE_INITS,
                 max_datagram: int = 1472, keylog=None, keygen=None, bulk: bool = True,
                 max_peers: int = 65536, aes: bool = False):
        self.psk_for = psk_for
        # Clients at most (--max-clients), with those of the other protocol
        # on a server that speaks both (`other_peers`, set by ServerMux).
        self.max_peers = max_peers
        self.other_peers = lambda: 0
        self.authorize = authorize
        self.t = timers or Timers()
        self.rng = rng
        self.keylog = keylog  # callable(line) for session keys, or None
        self.keygen = keygen  # () -> X25519PrivateKey; None: fresh random keys
        self.max_plain = max_datagram - wire.DATA_MIN
        self.max_datagram = max_datagram
        self.max_frame = wire.bulk_max_plain(max_datagram)
        # A peer reached over IPv6: 20 bytes more of outer header, so
        # datagrams 20 bytes smaller (max_plain, max_frame, max_datagram).
        v6 = max_datagram - (outer_ip_udp(True) - outer_ip_udp(False))
        self.v6_sizes = (v6 - wire.DATA_MIN, wire.bulk_max_plain(v6), v6)
        # `aes`: this server's data keys may run AES-256-GCM (its CPU has
        # AES instructions; the daemon's --cipher auto).
        self.features = (wire.FEATURE_BULK if bulk else 0) | (wire.FEATURE_AES256GCM if aes else 0)
        self.frames = Reassembly(FRAME_SLOTS, FRAME_TIMEOUT, per_group=FRAME_SLOTS_PER_SESSION)
        self._bulk_n: int | None = None   # peers that take BULK (cached, reset with _behind)
        self.load = LoadMeter(load_threshold)
        self.cookies = CookieMaker(rng, self.t.cookie_secret_life)
        self.peers: dict[str, Peer] = {}
        # (peer, packet) for an inner packet whose source the peer does not
        # own, after it is counted: the daemon's throttled log line.
        self.on_spoofed: Callable[[Peer, Any], None] | None = None
        self.by_address: dict[int, Peer] = {}
        # Addresses of the server itself (camex.base.addrpolicy), as integers:
        # route() never gives a peer for them, whatever the table says.
        self.reserved: frozenset = frozenset()
        self._behind: list | None = None   # networks behind clients, longest prefix first
        self._behind6: list | None = None  # the same for IPv6 (keys without V6)
        self.sessions: dict[int, Any] = {}   # local index -> Peer or _Pending
        self.pending_by_key: dict[str, int] = {}
        self._timers: list = []       # heap of (time, peer.seq, peer), see "Timers"
        self._seq = 0                 # the last Peer.seq given
        self._pend_last: float | None = None        # creation time of the newest pending handshake
        self._pend_disorder = False   # a pending handshake is older than one before it
        self.seen_e: OrderedDict = OrderedDict()  # INIT ephemeral -> time
        self.hinted: dict = {}                     # addr -> time of last NOSESSION
        self.hint_second: int | None = None
        self.hint_count = 0
        self.init_second: int | None = None
        self.init_counts: dict = {}   # under load: source IP -> count
        self.spare_inits = spare_inits
        self.init_spare = spare_inits   # of this second's spare handshakes, those left
        self._mac1_keys: dict[bytes, bytes] = {}
        self.stats = {"no_key": 0, "bad_mac1": 0, "cookie_sent": 0, "init_replay": 0,
                      "bad_init": 0, "refused": 0, "rate_limited": 0, "handshakes": 0, "unknown_index": 0,
                      "stale": 0, "replay": 0, "forged": 0, "spoofed": 0, "malformed": 0,
                      "bulk_rx": 0, "bulk_tx": 0}

    # --- public API -------------------------------------------------------

    def receive(self, datagram, addr, now: float) -> list:
        kind = wire.msg_type(datagram)
        if kind == wire.T_BULK:
            return self._on_bulk(datagram, addr, now)
        if kind == wire.T_DATA:
            return self._on_data(datagram, addr, now)
        if kind == wire.T_INIT:
            return self._on_init(datagram, addr, now)
        self.stats["malformed"] += 1   # RESP/COOKIE/NOSESSION are not for a server
        return []

    def receive_frame(self, first, ciphertext, addr, now: float) -> list:
        """A whole BULK frame from one GRO read: its fragment 0 and the
        ciphertext of all its fragments (camex.v2.bulk.FastReceiver)."""
        return self._on_bulk(first, addr, now, ciphertext)

    def send(self, peer: Peer, packets, now: float) -> list:
        """Inner packets for `peer` -> [(datagram, addr)]; [] if it has no
        usable session (the packets are dropped: the client will be back)."""
        s = peer.current
        if s is None or not s.can_send() or s.age(now) >= self.t.reject_after_time:
            return []
        flags = self._rekey_flag(s, now)
        peer.ack_due = None
        peer.stats["tx"] += len(packets)
        peer.stats["tx_bytes"] += sum(map(len, packets))
        ep = peer.endpoint
        max_plain = self.v6_sizes[0] if ":" in ep[0] else self.max_plain
        return [(d, ep) for d in s.seal_packets(packets, now, max_plain, flags)]

    def send_frame(self, peer: Peer, records, now: float, plain=None):
        """[(gso_size, packet)] for `peer` -> [(datagram, addr)] as BULK
        frames (one AEAD each; records are grouped while they fit), or None
        if the peer does not take BULK (the caller cuts the super-packets
        and uses send()). A record too large for 64 fragments of our
        datagram size goes out cut, as DATA. `plain`: the records already
        packed (a relayed frame's plaintext), sealed as they are if they fit."""
        if not (self.features & wire.FEATURE_BULK and peer.bulk):
            return None
        s = peer.current
        if s is None or not s.can_send() or s.age(now) >= self.t.reject_after_time:
            return []
        flags = self._rekey_flag(s, now)
        peer.ack_due = None
        st = peer.stats
        out = []
        fits = []
        ep = peer.endpoint
        if ":" in ep[0]:
            max_plain, max_frame, max_datagram = self.v6_sizes
        else:
            max_plain, max_frame, max_datagram = self.max_plain, self.max_frame, self.max_datagram
        for g, p in records:
            st["tx"] += bulk.segment_count(g, p)
            st["tx_bytes"] += len(p)
            if len(p) + wire.BULK_RECORD <= max_frame:
                fits.append((g, p))
            else:
                out += s.seal_packets(bulk.segments(g, p), now, max_plain, flags)
        if plain is None or len(fits) != len(records) or len(plain) > max_frame:
            plains = bulk.plaintexts(fits, max_frame)
        else:
            plains = (plain,)
        for plain in plains:
            out += s.seal_frame(plain, now, max_datagram, flags)
            st["bulk_tx"] += 1
            self.stats["bulk_tx"] += 1
        return [(d, ep) for d in out]

    @property
    def bulk_peers(self) -> int:
        """How many peers take BULK frames (cached until peers change)."""
        if self._bulk_n is None:
            self._bulk_n = sum(1 for p in self.peers.values() if p.bulk) \
                if self.features & wire.FEATURE_BULK else 0
        return self._bulk_n

    def route(self, dst) -> Peer | None:
        """The peer whose grant holds `dst` (4 bytes or IPv4Address): its
        tunnel address first, then the longest network behind a client."""
        n = int.from_bytes(dst, "big") if isinstance(dst, (bytes, bytearray, memoryview)) else int(dst)
        if n in self.reserved:
            return None
        peer = self.by_address.get(n)
        if peer is not None:
            return peer
        if self._behind is None:   # rebuilt lazily after any change of peers
            self._behind = sorted(
                ((net.prefixlen, int(net.netmask), int(net.network_address), p)
                 for p in self.peers.values() for net in p.grant.allowed
                 if net.version == 4 and net.prefixlen < 32), key=lambda x: -x[0])
        for _, mask, net, p in self._behind:   # longest prefix first
            if n & mask == net:
                return p
        return None

    def route6(self, dst) -> Peer | None:
        """route() for an IPv6 destination (16 bytes or IPv6Address)."""
        n = int.from_bytes(dst, "big") if isinstance(dst, (bytes, bytearray, memoryview)) \
            else int(dst)
        if n | V6 in self.reserved:
            return None
        peer = self.by_address.get(n | V6)
        if peer is not None:
            return peer
        if self._behind6 is None:   # rebuilt lazily after any change of peers
            self._behind6 = sorted(
                ((net.prefixlen, int(net.netmask), int(net.network_address), p)
                 for p in self.peers.values() for net in p.grant.allowed
                 if net.version == 6 and net.prefixlen < 128), key=lambda x: -x[0])
        for _, mask, net, p in self._behind6:
            if n & mask == net:
                return p
        return None

    def next_timer(self) -> float | None:
        # Asked after every wake-up of the daemon: the usual cases (no
        # pending handshake) without a call of _pending_top.
        a = self._peer_top()
        if not self.pending_by_key:
            return a
        b = self._pending_top()
        if a is None:
            return b
        return a if b is None or a <= b else b

    def on_timer(self, now: float) -> list:
        out = []
        peers, h = self.peers, self._timers
        edge = now + TIMER_SLACK
        due = {}
        while h and h[0][0] <= edge:
            t, _, p = heapq.heappop(h)
            if t == p.timer_at and peers.get(p.key) is p:
                due[p.seq] = p
        # In the order of self.peers, as a walk over all of them would go.
        for seq in sorted(due):
            p = due[seq]
            p.timer_at = None
            out += self._fire_peer(p, now)
            if peers.get(p.key) is p:
                self._arm(p)
        rekey, pending, sessions = self.t.rekey_after_time, self.pending_by_key, self.sessions
        if self._pend_disorder:
            for key, idx in list(pending.items()):
                if sessions[idx].session.age(now) >= rekey:
                    self._forget_pending(key)
        else:   # oldest first: the first one not expired ends it
            while pending and sessions[next(iter(pending.values()))].session.age(now) >= rekey:
                self._forget_pending(next(iter(pending)))
        if not pending:
            self._pend_disorder = False
        horizon = now - self.t.reject_after_time
        while self.seen_e and next(iter(self.seen_e.values())) < horizon:
            self.seen_e.popitem(last=False)
        return out

    # --- timer heaps ------------------------------------------------------

    def _fire_peer(self, p: Peer, now: float) -> list:
        """Whatever of the peer's timers is due at `now`: the expiry of its
        previous or current session, its passive keepalive."""
        limit = self.t.reject_after_time
        if p.previous is not None and p.previous.age(now) >= limit:
            self.sessions.pop(p.previous.local_index, None)
            p.previous = None
        if p.current is not None and p.current.age(now) >= limit:
            return self._drop_peer(p, "session expired")
        s = p.current
        if p.ack_due is not None and now >= p.ack_due and s is not None and s.can_send():
            # Passive keepalive: the client sent data and we had nothing
            # to say for a while; tell it we are alive.
            out = [Send(s.seal(b"", now, self._rekey_flag(s, now)), p.endpoint)]
            p.ack_due = None
            return out
        return []

    def _peer_due(self, p: Peer) -> float | None:
        """The peer's earliest timer: passive keepalive, session expiry."""
        t = p.ack_due
        limit = self.t.reject_after_time
        for s in (p.current, p.previous):
            if s is not None:
                e = s.created + limit
                if t is None or e < t:
                    t = e
        return t

    def _ack_later(self, peer: Peer, now: float) -> None:
        """Data came from the peer: a passive keepalive falls due unless we
        send it something first (camex.v2.lone does this inline)."""
        if peer.ack_due is None:
            a = peer.ack_due = now + self.t.passive_keepalive
            if peer.timer_at is None or a < peer.timer_at:
                self._arm(peer)

    def _arm(self, p: Peer) -> None:
        """After an event that may bring the peer's next timer forward."""
        t = self._peer_due(p)
        if t is not None and (p.timer_at is None or t < p.timer_at):
            p.timer_at = t
            h = self._timers
            heapq.heappush(h, (t, p.seq, p))
            if len(h) > 2 * len(self.peers) + HEAP_SPARE:
                self._compact()

    def _peer_top(self) -> float | None:
        """The earliest timer of all peers: settle the heap's top."""
        h, peers = self._timers, self.peers
        while h:
            d, _, p = h[0]
            if d != p.timer_at or peers.get(p.key) is not p:
                heapq.heappop(h)          # dead entry
                continue
            # _peer_due(p) inlined: this runs after every wake-up.
            t = p.ack_due
            limit = self.t.reject_after_time
            s = p.current
            if s is not None:
                e = s.created + limit
                if t is None or e < t:
                    t = e
            s = p.previous
            if s is not None:
                e = s.created + limit
                if t is None or e < t:
                    t = e
            if t is not None and t >= d:
                # Due then, or later: a passive keepalive answered since the
                # push moved the peer's timer back. The entry is kept and
                # fires early (on_timer finds nothing due and re-arms):
                # moving it would cost a heap operation after every answered
                # datagram, the first of an idle round trip included.
                return d
            p.timer_at = t
            if t is None:
                heapq.heappop(h)
            else:
                heapq.heapreplace(h, (t, p.seq, p))
        return None

    def _pending_top(self) -> float | None:
        pending, sessions, rekey = self.pending_by_key, self.sessions, self.t.rekey_after_time
        if not pending:
            return None
        if self._pend_disorder:
            return min(sessions[i].session.created for i in pending.values()) + rekey
        return sessions[next(iter(pending.values()))].session.created + rekey

    def _compact(self) -> None:
        """Drop every dead entry (amortised: after as many pushes as there
        are live entries, plus HEAP_SPARE)."""
        peers, live = self.peers, {}
        for e in self._timers:
            p = e[2]
            if e[0] == p.timer_at and peers.get(p.key) is p:
                live[p.seq] = e
        self._timers[:] = live.values()
        heapq.heapify(self._timers)

    def close(self, now: float) -> list:
        """Shutdown: an authenticated CLOSE to every peer, so that clients
        start knocking at once and are back as soon as we are."""
        out = []
        for p in self.peers.values():
            s = p.current
            if s is not None and s.can_send() and p.endpoint is not None:
                out.append(Send(s.seal(b"", now, wire.FLAG_CLOSE), p.endpoint))
        for p in list(self.peers.values()):
            out += self._drop_peer(p, "server shutdown")
        for key in list(self.pending_by_key):
            self._forget_pending(key)
        return [a for a in out if isinstance(a, Send)]

    def reload(self, psk_for, authorize, now: float) -> list:
        """New key store / profiles (SIGHUP). A peer whose key changed or went
        away, whose address is no longer granted, or whose pushed config
        changed gets a CLOSE and is dropped: it handshakes again at once
        under the new rules (and learns the new config). A change of the
        networks behind a peer only updates its grant."""
        self.psk_for, self.authorize = psk_for, authorize
        self._mac1_keys.clear()
        out: list = []
        for key in list(self.pending_by_key):
            self._forget_pending(key)
        for p in list(self.peers.values()):
            psk = psk_for(p.client_id)
            grant = authorize(p.client_id, p.request) if psk is not None else None
            if (psk != p.psk or not isinstance(grant, Grant)
                    or grant.addresses != p.grant.addresses or grant.config != p.grant.config):
                s = p.current
                if s is not None and s.can_send() and p.endpoint is not None:
                    out.append(Send(s.seal(b"", now, wire.FLAG_CLOSE), p.endpoint))
                out += self._drop_peer(p, "key or profile changed on reload")
            elif grant != p.grant:
                p.set_grant(grant)
                self._behind = self._behind6 = self._bulk_n = None
                out.append(Up(grant.config, p))
        return out

    # --- handshake --------------------------------------------------------

    def _mac1_key(self, psk: bytes) -> bytes:
        k = self._mac1_keys.get(psk)
        if k is None:
            k = self._mac1_keys[psk] = wire.mac1_key(psk)
        return k

    def _on_init(self, datagram, addr, now: float) -> list:
        init = wire.parse_init(datagram)
        if init is None:
            self.stats["malformed"] += 1
            return []
        psk = self.psk_for(init.client_id)
        if psk is None:
            self.stats["no_key"] += 1
            return []
        if not wire.equal(wire.mac(self._mac1_key(psk), init.mac1_span), init.mac1):
            self.stats["bad_mac1"] += 1   # wrong passphrase (or junk)
            return []
        # Only now is the INIT worth counting: it passed a keyed MAC.
        if self.load.hit(now):
            if not self.cookies.mac2_ok(init, addr, now):
                self.stats["cookie_sent"] += 1
                return [Send(self.cookies.reply(init, psk, addr, now), addr)]
            # A valid cookie proves the source address, not good intent:
            # every address may have INITS_PER_ADDRESS DHs a second, and
            # the SPARE_INITS of the second go to those that want more.
            sec = int(now)
            if sec != self.init_second:
                self.init_second, self.init_counts = sec, {}
                self.init_spare = self.spare_inits
            n = self.init_counts.get(addr[0], 0)
            if n >= INITS_PER_ADDRESS:
                if self.init_spare <= 0:
                    self.stats["rate_limited"] += 1
                    return []
                self.init_spare -= 1
            self.init_counts[addr[0]] = n + 1
        hs = HandshakeState("NNpsk0", False, init.prologue, psk,
                            self.keygen() if self.keygen else None)
        try:
            payload = hs.read_message(init.noise)
        except NoiseError:
            self.stats["bad_init"] += 1
            return []
        if hs.re in self.seen_e:
            self.stats["init_replay"] += 1   # replayed INIT: no DH, no state
            return []
        self.seen_e[hs.re] = now
        if len(self.seen_e) > REPLAY_CACHE:
            self.seen_e.popitem(last=False)
        request = wire.decode_request(payload)
        result = (self.authorize(init.client_id, request) if request is not None
                  else wire.Refusal(wire.ERR_REQUEST, "malformed request"))
        if isinstance(result, Grant):
            key = peer_key(init.client_id, result)
            for a in result.addresses:
                holder = self.by_address.get(addr_key(a))
                if holder is not None and holder.key != key:
                    result = wire.Refusal(wire.ERR_ADDRESS, f"{a} in use by another client")
                    break
        if isinstance(result, Grant):
            if key not in self.peers and \
                    len(self.peers) + self.other_peers() >= self.max_peers:
                result = wire.Refusal(wire.ERR_ADDRESS, f"server full: {self.max_peers} "
                                      "clients registered (--max-clients)")
        index = self._new_index()
        if isinstance(result, Grant):
            # Features and the payload version are announced to clients
            # that announce theirs: an older client gets the RESP it always got.
            features = self.features if request.features else 0
            body = struct.pack("<I", index) + wire.encode_config(
                result.config, features=features,
                version=min(request.version, wire.PAYLOAD_VERSION))
        else:
            self.stats["refused"] += 1
            body = struct.pack("<I", 0) + wire.encode_config(None, result)
        try:
            msg = hs.write_message(body)
        except NoiseError:
            self.stats["bad_init"] += 1
            return []
        resp = wire.pack_resp(init.sender, msg, self._mac1_key(psk))
        if isinstance(result, Grant):
            send_cs, recv_cs = hs.split()
            # AES-256-GCM when the client's INIT and our RESP both carry the bit.
            send_key, recv_key = data_keys(send_cs.key, recv_cs.key, bool(
                request.features & features & wire.FEATURE_AES256GCM))
            s = Session(index, init.sender, send_key, recv_key, False, now, self.t)
            if self.keylog is not None:
                for line in keylog_lines(index, init.sender, send_key, recv_key):
                    self.keylog(line)
            self._forget_pending(key)
            if len(self.pending_by_key) >= MAX_PENDING:
                self._forget_pending(next(iter(self.pending_by_key)))
            self.sessions[index] = _Pending(s, key, init.client_id, psk, request, result)
            self.pending_by_key[key] = index
            if self._pend_last is not None and now < self._pend_last:
                self._pend_disorder = True   # the clock went back (see "Timers")
            self._pend_last = now
            self.stats["handshakes"] += 1
        return [Send(resp, addr)]

    def _new_index(self) -> int:
        while True:
            i = struct.unpack("<I", self.rng(4))[0]
            if i and i not in self.sessions:
                return i

    def _forget_pending(self, key) -> None:
        idx = self.pending_by_key.pop(key, None)
        if idx is not None:
            self.sessions.pop(idx, None)

    # --- transport --------------------------------------------------------

    def _nosession(self, receiver: int, addr, now: float) -> list:
        # The sender may be a client whose session we lost (restart): tell
        # it, but no more than once a second per address and 100/s overall;
        # 8 bytes in answer to at least 32: no amplification.
        self.stats["unknown_index"] += 1
        if now - self.hinted.get(addr, -1e18) < NOSESSION_INTERVAL:
            return []
        sec = int(now)
        if sec != self.hint_second:
            self.hint_second, self.hint_count = sec, 0
        if self.hint_count >= NOSESSION_PER_SECOND:
            return []
        self.hint_count += 1
        if len(self.hinted) > 4096:
            self.hinted.clear()
        self.hinted[addr] = now
        return [Send(wire.pack_nosession(receiver), addr)]

    def _owner(self, receiver: int, addr, now: float):
        """(owner, session) for a receiver index, or (None, events) when the
        index is unknown (NOSESSION hint) or its session is too old."""
        owner = self.sessions.get(receiver)
        if owner is None:
            return None, self._nosession(receiver, addr, now)
        s = owner.session if isinstance(owner, _Pending) else (
            owner.current if owner.current is not None and owner.current.local_index == receiver
            else owner.previous)
        if s is None or s.age(now) >= self.t.reject_after_time:
            self.stats["stale"] += 1
            return None, []
        return owner, s

    def _authenticated(self, owner, flags: int, addr, now: float):
        """After a DATA or BULK frame authenticated: key confirmation,
        roaming, CLOSE. (peer, events, True if the peer is gone)."""
        out = []
        if isinstance(owner, _Pending):
            peer, out = self._confirm(owner, addr, now)
        else:
            peer = owner
        if addr != peer.endpoint:
            # Roaming: only here, after authentication and the replay check.
            old, peer.endpoint = peer.endpoint, addr
            if old is not None:
                out.append(Roamed(peer, old, addr))
        if flags & wire.FLAG_CLOSE:
            return peer, out + self._drop_peer(peer, "client closed the session"), True
        return peer, out, False

    def _on_data(self, datagram, addr, now: float) -> list:
        hdr = wire.parse_data_header(datagram)
        if hdr is None:
            self.stats["malformed"] += 1
            return []
        flags, receiver, counter = hdr
        owner, s = self._owner(receiver, addr, now)
        if owner is None:
            return s
        plain = s.open(datagram, counter, now)
        if isinstance(plain, str):
            self.stats["forged" if plain == FORGED else "replay"] += 1
            return []
        return self._opened(owner, flags, plain, addr, now)

    def _opened(self, owner, flags: int, plain, addr, now: float) -> list:
        """The rest of a DATA datagram once it authenticated (also the
        tail of camex.v2.lone's flat path for what it does not handle)."""
        peer, out, gone = self._authenticated(owner, flags, addr, now)
        if gone:
            return out
        packets = wire.parse_records(plain)
        if packets is None:
            self.stats["malformed"] += 1
            return out
        cur = peer.current
        if not packets:
            # A keepalive: answer it, so that an idle client knows we are here.
            if cur is not None and cur.can_send():
                out.append(Send(cur.seal(b"", now, self._rekey_flag(cur, now)), peer.endpoint))
                peer.ack_due = None
            return out
        good = [p for p in packets if peer.allows_source(p)]
        if len(good) != len(packets):
            n = len(packets) - len(good)
            peer.stats["spoofed"] += n
            self.stats["spoofed"] += n
            if self.on_spoofed is not None:
                self.on_spoofed(peer, next(p for p in packets if not peer.allows_source(p)))
        if good:
            peer.stats["rx"] += len(good)
            peer.stats["rx_bytes"] += sum(map(len, good))
            self._ack_later(peer, now)
            out.append(Deliver(good, peer))
        return out

    def _on_bulk(self, datagram, addr, now: float, ciphertext=None) -> list:
        f = wire.parse_bulk(datagram)
        if f is None:
            self.stats["malformed"] += 1
            return []
        owner, s = self._owner(f[2], addr, now)
        if owner is None:
            return s
        # Without the key, a sender can at most fill this session's few
        # reassembly slots; it never moves the window (bulk.collect).
        plain = bulk.collect(s, self.frames, self.stats, f, now, ciphertext)
        if plain is None:
            return []
        return self._bulk_opened(owner, f[0], plain, addr, now)

    def _bulk_opened(self, owner, flags: int, plain, addr, now: float) -> list:
        """A BULK frame that authenticated (its window moved): roaming,
        CLOSE, its records to their destinations. The flat path of
        camex.v2.lone hands over here what it does not take itself."""
        # The fragment that completed the frame names the endpoint (roaming).
        peer, out, gone = self._authenticated(owner, flags, addr, now)
        if gone:
            return out
        peer.stats["bulk_rx"] += 1
        records = wire.parse_bulk_records(plain)
        if records is None:
            self.stats["malformed"] += 1
            return out
        good = [r for r in records if peer.allows_source(r[1])]
        if len(good) != len(records):
            n = len(records) - len(good)
            peer.stats["spoofed"] += n
            self.stats["spoofed"] += n
            if self.on_spoofed is not None:
                self.on_spoofed(peer, next(r[1] for r in records if not peer.allows_source(r[1])))
        if good:
            for g, p in good:
                peer.stats["rx"] += bulk.segment_count(g, p)
                peer.stats["rx_bytes"] += len(p)
            self._ack_later(peer, now)
            # The plaintext as it came, if nothing was taken out: a relay
            # re-seals it for one destination without packing it again.
            out.append(DeliverFrame(good, peer, plain if len(good) == len(records) else None))
        return out

    def _confirm(self, pend: _Pending, addr, now: float):
        """The client's first DATA on a new session: it holds the keys, so the
        session becomes the peer's current one (a rekey, or a new peer)."""
        self.pending_by_key.pop(pend.key, None)
        s = pend.session
        s.confirmed = True
        out = []
        peer = self.peers.get(pend.key)
        # Someone else may have taken an address since the RESP went out.
        for a in pend.grant.addresses:
            holder = self.by_address.get(addr_key(a))
            if holder is not None and holder is not peer:
                out += self._drop_peer(holder, "address taken over")
        if peer is None:
            peer = Peer(pend.key, pend.client_id, pend.psk, pend.request, pend.grant)
            self._seq += 1
            peer.seq = self._seq
            peer.since = now
            self.peers[pend.key] = peer
            changed = True
        else:
            changed = pend.grant != peer.grant
            if changed and pend.grant.addresses != peer.grant.addresses:
                for a in peer.grant.addresses:
                    self.by_address.pop(addr_key(a), None)
            peer.psk, peer.request = pend.psk, pend.request
            peer.set_grant(pend.grant)
            if peer.previous is not None:
                self.sessions.pop(peer.previous.local_index, None)
        for a in peer.grant.addresses:
            self.by_address[addr_key(a)] = peer
        self._behind = self._behind6 = self._bulk_n = None
        peer.previous, peer.current = peer.current, s
        self.sessions[s.local_index] = peer
        self._arm(peer)
        peer.endpoint = addr if peer.endpoint is None else peer.endpoint
        if changed:
            out.append(Up(peer.grant.config, peer))
        return peer, out

    def _drop_peer(self, peer: Peer, reason: str) -> list:
        for s in (peer.current, peer.previous):
            if s is not None:
                self.sessions.pop(s.local_index, None)
        peer.current = peer.previous = None
        self._forget_pending(peer.key)
        if self.peers.get(peer.key) is peer:
            del self.peers[peer.key]
        for a in peer.grant.addresses:
            if self.by_address.get(addr_key(a)) is peer:
                del self.by_address[addr_key(a)]
        self._behind = self._behind6 = self._bulk_n = None
        return [Down(reason, peer)]

    def _rekey_flag(self, s: Session, now: float) -> int:
        # The responder cannot start a handshake; it asks the client to.
        if (s.send_counter >= self.t.rekey_after_messages
                or s.age(now) >= self.t.rekey_after_time + 2 * self.t.handshake_retry):
            return wire.FLAG_REKEY
        return 0
