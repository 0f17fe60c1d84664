"""The v2 client state machine (sans-I/O).

    c = ClientSession(psks, client_id="C1", request=wire.Request(auto=True))
    out = c.start(now)                 # events: Send(INIT...)
    out = c.receive(datagram, now)     # events: Send / Deliver / Up / Down / Refused
    dgrams = c.encrypt(packets, now)   # fast path: datagrams for the server
    dgrams = c.encrypt_frame(records, now)  # BULK: one AEAD per super-packet (or None)
    t = c.next_timer()                 # absolute time of the next on_timer call
    out = c.on_timer(now)              # events (retries, keepalives, rekeys)
    dgrams = c.close(now)              # say goodbye (CLOSE) before exiting

All datagrams go to the one server. `psks` are the candidate PSKs from
kdf.client_candidates(): the client offers one INIT per candidate until
one is answered, then sticks to that one.

States: idle -> handshaking -> established; a rekey (every
REKEY_AFTER_TIME, or on demand) is a handshake run while established, and
the old session keeps receiving until it expires. Handshakes are retried
every ~1 s (+ jitter) for as long as there is no answer, which is what
brings a client back within ~1 s of a server's return.
"""

from __future__ import annotations

import os
import struct

from .framing import Reassembly
from . import wire
from .bulk import collect
from .cookie import open_cookie
from .events import Deliver, DeliverFrame, Down, Refused, Send, Up
from .noise import HandshakeState, NoiseError
from .session import Session, Timers, data_keys, keylog_lines

REFUSED_RETRY = 30.0  # after an authenticated refusal, ask again this late
QUEUE_MAX = 256       # inner packets kept while no session is up
FRAME_SLOTS = 4       # BULK frames reassembled at once (one server)
FRAME_TIMEOUT = 1.0   # seconds a BULK frame may take to arrive whole


class _Pending:
    __slots__ = ("hs", "k", "mac1", "sent")

    def __init__(self, hs, k, mac1, sent):
        self.hs, self.k, self.mac1, self.sent = hs, k, mac1, sent


class ClientSession:
    def __init__(self, psks, client_id: str = "", request: wire.Request | None = None,
                 *, timers: Timers | None = None, rng=os.urandom,
                 max_datagram: int = 1472, keylog=None, keygen=None):
        if not psks:
            raise ValueError("v2 needs a passphrase")
        if len(client_id) > wire.MAX_ID or not wire.ID_RE.match(client_id.encode("ascii")):
            raise ValueError("bad client ID")
        self.psks = list(psks)
        self.mac1_keys = [wire.mac1_key(p) for p in self.psks]
        self.client_id = client_id
        self.request = request or wire.Request()
        self.t = timers or Timers()
        self.rng = rng
        self.keylog = keylog  # callable(line) for session keys, or None
        self.keygen = keygen  # () -> X25519PrivateKey; None: fresh random keys
        self.set_max_datagram(max_datagram)
        self.peer_bulk = False   # the server's RESP announced FEATURE_BULK
        self.frames = Reassembly(FRAME_SLOTS, FRAME_TIMEOUT)
        self.current: Session | None = None
        self.previous: Session | None = None
        self.pending: dict[int, _Pending] = {}
        self.good_psk: int | None = None   # candidate that was answered last
        self.unanswered_rounds = 0
        self.cookie: bytes | None = None
        self.cookie_time = -1e18
        self.handshaking = False
        self.next_handshake: float | None = None
        self.up = False
        self.config = None
        self.queue: list = []
        self.first_unanswered: float | None = None  # first send since we last heard
        self.ack_due: float | None = None           # passive keepalive deadline
        self.last_hint = -1e18
        self.stats = {"replay": 0, "forged": 0, "stale": 0, "malformed": 0,
                      "handshakes": 0, "inits": 0, "cookies": 0,
                      "bulk_rx": 0, "bulk_tx": 0}

    # --- public API -------------------------------------------------------


    def set_max_datagram(self, size: int) -> None:
        """The largest datagram to send (1472 over IPv4, 1452 over IPv6:
        a 1500-byte path less the outer headers)."""
        self.max_plain = size - wire.DATA_MIN
        self.max_datagram = size
        self.max_frame = wire.bulk_max_plain(size)
    def start(self, now: float) -> list:
        return [Send(d) for d in self._begin_handshake(now)]

    def probe(self, now: float) -> list:
        """One round of INITs (datagrams) without arming the retry timer:
        for a caller that decides itself when to try (protocol probing)."""
        self.handshaking = True
        out = self._send_inits(now)
        self.next_handshake = None
        return out

    @property
    def answered(self) -> bool:
        """Has a v2 server holding our key ever answered (RESP or COOKIE)?"""
        return self.good_psk is not None or self.stats["cookies"] > 0

    def encrypt(self, packets, now: float) -> list:
        """Inner packets -> DATA datagrams (several small packets may share
        one). Without a usable session the packets wait (bounded) and a
        handshake starts; its INITs are returned instead."""
        s = self.current
        if s is None or not s.can_send() or s.age(now) >= self.t.reject_after_time:
            self.queue.extend(packets)
            del self.queue[:-QUEUE_MAX]
            return [] if self.handshaking else self._begin_handshake(now)
        out = s.seal_packets(packets, now, self.max_plain)
        self._sent(now)
        if not self.handshaking and (s.send_counter >= self.t.rekey_after_messages
                                     or s.age(now) >= self.t.rekey_after_time):
            out += self._begin_handshake(now)
        return out

    @property
    def bulk_ready(self) -> bool:
        """May super-packets go out as BULK frames now? (The server said it
        takes them, and there is a session to seal them with.)"""
        s = self.current
        return self.peer_bulk and s is not None and s.can_send()

    def encrypt_frame(self, records, now: float):
        """[(gso_size, packet)] -> the fragments of ONE BULK frame (one AEAD,
        one counter value); None if BULK cannot carry them now (no BULK
        session, or too large for 64 fragments): the caller sends them as
        DATA instead."""
        s = self.current
        if (not self.peer_bulk or s is None or not s.can_send()
                or s.age(now) >= self.t.reject_after_time):
            return None
        plain = wire.pack_bulk_records(records)
        if len(plain) > self.max_frame:
            return None
        out = s.seal_frame(plain, now, self.max_datagram)
        self.stats["bulk_tx"] += 1
        self._sent(now)
        if not self.handshaking and (s.send_counter >= self.t.rekey_after_messages
                                     or s.age(now) >= self.t.rekey_after_time):
            out += self._begin_handshake(now)
        return out

    def receive_frame(self, first, ciphertext, now: float) -> list:
        """A whole BULK frame from one GRO read: its fragment 0 and the
        ciphertext of all its fragments (camex.v2.bulk.FastReceiver)."""
        return self._on_bulk(first, now, ciphertext)

    def receive(self, datagram, now: float) -> list:
        kind = wire.msg_type(datagram)
        if kind == wire.T_BULK:
            return self._on_bulk(datagram, now)
        if kind == wire.T_DATA:
            return self._on_data(datagram, now)
        if kind == wire.T_RESP:
            return self._on_resp(datagram, now)
        if kind == wire.T_COOKIE:
            return self._on_cookie(datagram, now)
        if kind == wire.T_NOSESSION:
            return self._on_nosession(datagram, now)
        self.stats["malformed"] += 1
        return []

    def next_timer(self) -> float | None:
        t = []
        if self.next_handshake is not None:
            t.append(self.next_handshake)
        s = self.current
        if s is not None:
            t.append(s.created + self.t.reject_after_time)
            if not self.handshaking:
                t.append(s.created + self.t.rekey_after_time)
            # (s.can_send() inlined: asked after every wake-up of the daemon)
            if s.confirmed and s.send_counter < s.send_limit and self.t.keepalive > 0:
                t.append(s.last_sent + self.t.keepalive)
        if self.previous is not None:
            t.append(self.previous.created + self.t.reject_after_time)
        if self.ack_due is not None:
            t.append(self.ack_due)
        if self.first_unanswered is not None and not self.handshaking:
            t.append(self.first_unanswered + self.t.dead_after)
        return min(t) if t else None

    def on_timer(self, now: float) -> list:
        out = []
        p = self.previous
        if p is not None and p.age(now) >= self.t.reject_after_time:
            self.previous = None
        s = self.current
        if s is not None and s.age(now) >= self.t.reject_after_time:
            self.current = s = None
            out += self._down("session expired", now)
        if self.handshaking:
            if self.next_handshake is not None and now >= self.next_handshake:
                self.unanswered_rounds += 1
                out += [Send(d) for d in self._send_inits(now)]
        elif s is not None and s.age(now) >= self.t.rekey_after_time:
            out += [Send(d) for d in self._begin_handshake(now)]
        elif (self.first_unanswered is not None
              and now - self.first_unanswered >= self.t.dead_after):
            # We kept sending and heard nothing (not even the keepalive the
            # server owes us): assume the server lost our session.
            out += [Send(d) for d in self._begin_handshake(now)]
        s = self.current
        if s is not None and s.can_send():
            if (self.ack_due is not None and now >= self.ack_due) or \
                    (self.t.keepalive > 0 and now - s.last_sent >= self.t.keepalive):
                out.append(Send(s.seal(b"", now)))
                self._sent(now)
        return out

    def close(self, now: float) -> list:
        """A CLOSE for the server (so it frees our address at once); the
        object is unusable afterwards."""
        s = self.current
        out = [s.seal(b"", now, wire.FLAG_CLOSE)] if s is not None and s.can_send() else []
        self.current = self.previous = None
        self.pending.clear()
        self.handshaking, self.next_handshake = False, None
        return out

    @property
    def established(self) -> bool:
        return self.current is not None

    # --- handshake --------------------------------------------------------

    def _begin_handshake(self, now: float) -> list:
        self.handshaking = True
        self.unanswered_rounds = 0
        return self._send_inits(now)

    def _new_index(self) -> int:
        while True:
            i = struct.unpack("<I", self.rng(4))[0]
            if i and i not in self.pending and not any(
                    x is not None and x.local_index == i for x in (self.current, self.previous)):
                return i

    def _send_inits(self, now: float) -> list:
        # One INIT per candidate PSK until one was answered; then only that
        # one, unless it went unanswered twice in a row (key changed?).
        if self.good_psk is not None and self.unanswered_rounds < 2:
            cands = [self.good_psk]
        else:
            cands = list(range(len(self.psks)))
        # Keep the previous round: its answer may still be on the way.
        horizon = now - 2.5 * self.t.handshake_retry
        self.pending = {i: p for i, p in self.pending.items() if p.sent >= horizon}
        cookie = self.cookie if now - self.cookie_time < self.t.cookie_life else None
        out = []
        for k in cands:
            idx = self._new_index()
            head = wire.init_head(idx, self.client_id)
            hs = HandshakeState("NNpsk0", True, wire.PROLOGUE_LABEL + head, self.psks[k],
                                self.keygen() if self.keygen else None)
            d = wire.pack_init(head, hs.write_message(wire.encode_request(self.request)),
                               self.mac1_keys[k], cookie)
            self.pending[idx] = _Pending(hs, k, d[-2 * wire.MACLEN:-wire.MACLEN], now)
            out.append(d)
        self.stats["inits"] += len(out)
        jitter = self.t.handshake_jitter * (self.rng(1)[0] / 255.0)
        self.next_handshake = now + self.t.handshake_retry + jitter
        return out

    def _on_resp(self, datagram, now: float) -> list:
        r = wire.parse_resp(datagram)
        p = self.pending.get(r.receiver) if r else None
        if p is None or not wire.equal(wire.mac(self.mac1_keys[p.k], r.mac1_span), r.mac1):
            self.stats["malformed" if r is None else "stale"] += 1
            return []
        hs = p.hs.copy()  # a forged RESP must not spoil the real one
        try:
            payload = hs.read_message(r.noise)
        except NoiseError:
            self.stats["forged"] += 1
            return []
        result = wire.decode_config(payload[4:]) if len(payload) >= 4 else None
        if result is None:
            self.stats["malformed"] += 1
            return []
        self.pending.clear()
        self.peer_bulk = bool(getattr(result, "features", 0) & wire.FEATURE_BULK
                              and self.request.features & wire.FEATURE_BULK)
        self.good_psk, self.unanswered_rounds = p.k, 0
        self.handshaking = False
        self.next_handshake = None
        if isinstance(result, wire.Refusal):
            self.next_handshake = now + REFUSED_RETRY
            self.handshaking = True
            return [Refused(result.code, result.message)]
        send_cs, recv_cs = hs.split()
        server_index = struct.unpack_from("<I", payload)[0]
        # AES-256-GCM when our INIT and the server's RESP both carry the bit.
        send_key, recv_key = data_keys(send_cs.key, recv_cs.key, bool(
            result.features & self.request.features & wire.FEATURE_AES256GCM))
        s = Session(r.receiver, server_index, send_key, recv_key, True, now, self.t)
        if self.keylog is not None:
            for line in keylog_lines(r.receiver, server_index, send_key, recv_key):
                self.keylog(line)
        self.previous, self.current = self.current, s
        self.first_unanswered = None
        self.stats["handshakes"] += 1
        out = []
        if not self.up or result != self.config:
            self.up, self.config = True, result
            out.append(Up(result))
        # Key confirmation: the server uses the session only after our first
        # DATA on it, so send the queue now, or at least a keepalive.
        queued, self.queue = self.queue, []
        dgrams = s.seal_packets(queued, now, self.max_plain) if queued else [s.seal(b"", now)]
        self._sent(now)
        return out + [Send(d) for d in dgrams]

    def _on_cookie(self, datagram, now: float) -> list:
        c = wire.parse_cookie(datagram)
        p = self.pending.get(c[0]) if c else None
        if p is None:
            return []
        cookie = open_cookie(self.psks[p.k], p.mac1, c[1], c[2])
        if cookie is not None:
            # Used from the next (timer-driven) INIT on: no extra load now.
            self.cookie, self.cookie_time = cookie, now
            self.stats["cookies"] += 1
        return []

    def _on_nosession(self, datagram, now: float) -> list:
        # Unauthenticated by nature (the server lost our keys): it may only
        # make us start a handshake early, at most once per retry interval.
        index = wire.parse_nosession(datagram)
        s = self.current
        if (s is None or index != s.remote_index or self.handshaking
                or now - self.last_hint < self.t.handshake_retry):
            return []
        self.last_hint = now
        return [Send(d) for d in self._begin_handshake(now)]

    # --- transport --------------------------------------------------------

    def _session_for(self, index: int):
        for s in (self.current, self.previous):
            if s is not None and s.local_index == index:
                return s
        return None

    def _on_data(self, datagram, now: float) -> list:
        hdr = wire.parse_data_header(datagram)
        if hdr is None:
            self.stats["malformed"] += 1
            return []
        flags, receiver, counter = hdr
        s = self._session_for(receiver)
        if s is None or s.age(now) >= self.t.reject_after_time:
            self.stats["stale"] += 1
            return []
        plain = s.open(datagram, counter, now)
        if isinstance(plain, str):
            self.stats["replay" if plain != "forged" else "forged"] += 1
            return []
        out, closed = self._authenticated(flags, now)
        if not closed:
            self._deliver(out, wire.parse_records(plain), Deliver, now)
        return out

    def _deliver(self, out: list, items, event, now: float) -> None:
        """Records of an authenticated DATA or BULK frame (None: malformed)
        as a Deliver/DeliverFrame event; data received, so a passive
        keepalive is due unless we send something first."""
        if items is None:
            self.stats["malformed"] += 1
        elif items:
            self._ack_later(now)
            out.append(event(items))

    def _ack_later(self, now: float) -> None:
        """Data came from the server: a passive keepalive falls due unless
        we send it something first (camex.v2.lone does this inline)."""
        if self.ack_due is None:
            self.ack_due = now + self.t.passive_keepalive

    def _authenticated(self, flags: int, now: float):
        """What an authenticated DATA or BULK frame's flags ask: (events,
        True if the session is gone)."""
        self.first_unanswered = None
        if flags & wire.FLAG_CLOSE:
            # Authenticated goodbye (server shutting down): forget the keys
            # and knock every retry interval until it is back.
            self.current = self.previous = None
            out = self._down("server closed the session", now)
            return out + [Send(d) for d in self._begin_handshake(now)], True
        out = []
        if flags & wire.FLAG_REKEY and not self.handshaking:
            out += [Send(d) for d in self._begin_handshake(now)]
        return out, False

    def _on_bulk(self, datagram, now: float, ciphertext=None) -> list:
        f = wire.parse_bulk(datagram)
        if f is None:
            self.stats["malformed"] += 1
            return []
        s = self._session_for(f[2])
        if s is None or s.age(now) >= self.t.reject_after_time:
            self.stats["stale"] += 1
            return []
        plain = collect(s, self.frames, self.stats, f, now, ciphertext)
        if plain is None:
            return []
        return self._bulk_opened(f[0], plain, now)

    def _bulk_opened(self, flags: int, plain, now: float) -> list:
        """A BULK frame that authenticated (its window moved): what its
        flags ask, then its records. camex.v2.lone's flat frame path goes
        on here with a frame it does not deliver itself."""
        out, closed = self._authenticated(flags, now)
        if not closed:
            self._deliver(out, wire.parse_bulk_records(plain), DeliverFrame, now)
        return out

    def _sent(self, now: float) -> None:
        self.ack_due = None
        if self.first_unanswered is None:
            self.first_unanswered = now

    def _down(self, reason: str, now: float) -> list:
        self.first_unanswered = None
        self.ack_due = None
        if not self.up:
            return []
        self.up = False
        if not self.handshaking:
            self.handshaking = True
            self.next_handshake = now
        return [Down(reason)]
