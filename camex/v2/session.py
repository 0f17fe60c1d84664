"""One established v2 session: per-direction keys, counters, replay window.

A session is what one completed handshake yields. The initiator (client)
sends with the first key of Noise's Split and receives with the second; the
responder the other way round. The 64-bit counter in each DATA datagram is
the AEAD nonce; it starts at 0 with fresh keys and only ever grows, so a
(key, nonce) pair is never used twice. Rekeying is a new handshake, hence a
new session with new keys - never a counter reset.

The AEAD is ChaCha20-Poly1305, or AES-256-GCM where both ends announced
FEATURE_AES256GCM in the handshake (docs/PROTOCOL.md §4.6): such a
session's keys are AesKey objects, bytes that say their cipher, so every
path that borrows an AEAD for a key from AEADS gets the right one.
"""

from __future__ import annotations

import time

from cryptography.exceptions import InvalidTag
from ..base.aead import AESGCM, ChaCha20Poly1305

from .framing import glue_frame
from . import wire
from .events import FORGED, REPLAY, TOO_OLD  # what open() returns instead of a plaintext
from .noise import nonce_bytes
from .replay import ReplayWindow


class Timers:
    """Protocol timing (seconds) and message limits; defaults as documented
    in docs/PROTOCOL.md. Tests shrink them; deployments leave them alone,
    except `keepalive` (--keepalive). A plain class rather than a dataclass:
    `dataclasses` imports `inspect`, 1.2 MiB of the daemon's resident memory."""

    def __init__(self, rekey_after_time: float = 120.0, reject_after_time: float = 180.0,
                 rekey_after_messages: int = 2**60,
                 reject_after_messages: int = 2**64 - 2**13 - 1,
                 handshake_retry: float = 1.0, handshake_jitter: float = 0.125,
                 keepalive: float = 25.0, passive_keepalive: float = 10.0,
                 dead_after: float = 15.0, cookie_life: float = 110.0,
                 cookie_secret_life: float = 120.0):
        self.rekey_after_time = rekey_after_time
        self.reject_after_time = reject_after_time
        self.rekey_after_messages = rekey_after_messages
        self.reject_after_messages = reject_after_messages
        self.handshake_retry = handshake_retry
        self.handshake_jitter = handshake_jitter
        self.keepalive = keepalive          # 0: no NAT keepalives (--keepalive 0)
        self.passive_keepalive = passive_keepalive
        self.dead_after = dead_after
        self.cookie_life = cookie_life
        self.cookie_secret_life = cookie_secret_life


class AesKey(bytes):
    """A data key of a session whose AEAD is AES-256-GCM."""
    __slots__ = ()


def data_keys(send_key: bytes, recv_key: bytes, aes: bool) -> tuple:
    """A session's (send, recv) keys from Noise's Split, for the AEAD the
    handshake agreed on (`aes`: both ends announced FEATURE_AES256GCM)."""
    if aes:
        return AesKey(send_key), AesKey(recv_key)
    return send_key, recv_key


def cipher_name(key: bytes) -> str:
    return "aes-256-gcm" if type(key) is AesKey else "chacha20-poly1305"


def aead_for(key: bytes):
    """A new AEAD object for a session key (AesKey: AES-256-GCM)."""
    return (AESGCM if type(key) is AesKey else ChaCha20Poly1305)(key)


def keylog_lines(local_index: int, remote_index: int, send_key: bytes,
                 recv_key: bytes) -> list:
    """SSLKEYLOGFILE-style lines for a new session (for camex-dissect):
    "CAMEX_V2 <receiver index> <key>" - DATA datagrams whose receiver index
    field holds that value (printed as 8 hex digits of the u32) open with
    that key. Both directions of the session, one line each; a session
    under AES-256-GCM adds " aes-256-gcm" to each."""
    tail = " aes-256-gcm" if type(send_key) is AesKey else ""
    return [f"CAMEX_V2 {local_index:08x} {recv_key.hex()}{tail}",
            f"CAMEX_V2 {remote_index:08x} {send_key.hex()}{tail}"]


class _AeadCache:
    """AEAD objects for the sessions that are moving data (AESGCM for an
    AesKey, ChaCha20Poly1305 for any other key), kept while they are used.

    One object holds 1.1-1.3 KiB of resident memory (an initialised cipher
    context: `python -m bench.fleet_v2_micro --objects 2000`); two per
    session would cost a server with thousands of mostly idle clients more
    than everything else it keeps for them. Sessions keep their 32-byte keys
    and borrow objects from here; building one again takes about half a
    microsecond.

    The bound is recent use, not a count: a count too small for the senders
    is the worst case of a least-recently-used cache, a fleet of cameras
    sending in turn (1,000 recv keys through 512 places: every datagram
    missed, built an object and evicted the one needed next). Two
    generations instead: a get() finds its key in `cur` (one dict lookup),
    else takes it over from `old`, else builds it into `cur`. On a miss, at
    most once per `period` seconds of `clock`, the generations rotate (old
    is dropped, cur becomes old), so an object lives while its key is used
    at least once per period and goes at the second rotation after its
    last use: every streaming session keeps its two objects, an idle one
    rebuilds its object for a keepalive and gives it back (a server that
    falls silent keeps the last period's objects until its next miss).
    `cap` bounds a generation whatever the pattern (it rotates early when
    full): at most 2 * cap objects. `built` counts the objects made.
    """

    def __init__(self, period: float = 1.0, cap: int = 16384, clock=time.monotonic):
        self.period = period
        self.cap = cap
        self.clock = clock
        self.built = 0
        self._cur: dict = {}
        self._old: dict = {}
        self._rotated = clock()

    def get(self, key: bytes):
        try:
            return self._cur[key]
        except KeyError:
            return self._miss(key)

    def _miss(self, key: bytes):
        aead = self._old.pop(key, None)
        now = self.clock()
        if now - self._rotated >= self.period or len(self._cur) >= self.cap:
            self._old, self._cur = self._cur, {}
            self._rotated = now
        if aead is None:
            aead = aead_for(key)
            self.built += 1
        self._cur[key] = aead
        return aead

    def __len__(self) -> int:
        return len(self._cur) + len(self._old)


AEADS = _AeadCache()


class Session:
    __slots__ = ("local_index", "remote_index", "send_key", "recv_key",
                 "send_counter", "window", "created", "initiator", "confirmed",
                 "last_sent", "last_received", "send_limit", "recv_limit")

    def __init__(self, local_index: int, remote_index: int, send_key: bytes,
                 recv_key: bytes, initiator: bool, now: float, timers: Timers):
        self.local_index = local_index
        self.remote_index = remote_index
        self.send_key = send_key
        self.recv_key = recv_key
        self.send_counter = 0
        self.window = ReplayWindow()
        self.created = now
        self.initiator = initiator
        # The responder may send only once the initiator proved it holds the
        # keys (its first DATA): message 1 alone can be a replay.
        self.confirmed = initiator
        self.last_sent = -1e18
        self.last_received = -1e18
        self.send_limit = timers.reject_after_messages
        self.recv_limit = timers.reject_after_messages

    def age(self, now: float) -> float:
        return now - self.created

    def can_send(self) -> bool:
        return self.confirmed and self.send_counter < self.send_limit

    def seal(self, plaintext: bytes, now: float, flags: int = 0) -> bytes:
        counter = self.send_counter
        if counter >= self.send_limit:
            raise OverflowError("session exhausted")  # callers check can_send
        self.send_counter = counter + 1
        header = wire.data_header(self.remote_index, counter, flags)
        self.last_sent = now
        return header + AEADS.get(self.send_key).encrypt(nonce_bytes(counter), plaintext, header)

    def seal_packets(self, packets, now: float, max_plain: int, flags: int = 0) -> list:
        """Pack inner packets into as few DATA datagrams as fit: each carries
        records whose total is at most `max_plain` bytes (a packet larger
        than that travels alone)."""
        if len(packets) == 1:
            # A lone packet (idle tunnel): its record without pack_records.
            p = packets[0]
            return [self.seal(len(p).to_bytes(2, "big") + p, now, flags)]
        out = []
        batch: list = []
        size = 0
        for p in packets:
            need = len(p) + 2
            if batch and size + need > max_plain:
                out.append(self.seal(wire.pack_records(batch), now, flags))
                batch, size = [], 0
            batch.append(p)
            size += need
        if batch:
            out.append(self.seal(wire.pack_records(batch), now, flags))
        return out

    def seal_frame(self, plaintext, now: float, datagram_size: int, flags: int = 0) -> list:
        """A BULK frame: the plaintext (bulk records) sealed ONCE under one
        counter value (shared with DATA, so one replay window covers both)
        and cut into fragments of `datagram_size` bytes, the last shorter:
        one GSO run, returned as [gso.Run] (glued: the kernel cuts it at
        send; Run.datagrams() cuts it here). Raises ValueError if it needs more than 64 fragments
        (callers keep the plaintext within wire.bulk_max_plain)."""
        counter = self.send_counter
        if counter >= self.send_limit:
            raise OverflowError("session exhausted")  # callers check can_send
        room = datagram_size - wire.HEADER_BULK
        count = -(-(len(plaintext) + wire.TAGLEN) // room)
        if count > wire.BULK_MAX_FRAGMENTS:
            raise ValueError(f"a BULK frame of {len(plaintext)} bytes needs {count} datagrams")
        self.send_counter = counter + 1
        header = wire.bulk_header(self.remote_index, counter, count, flags)
        self.last_sent = now
        sealed = AEADS.get(self.send_key).encrypt(nonce_bytes(counter), plaintext, header)
        return [glue_frame(header, sealed, datagram_size)]

    def fresh(self, counter: int) -> bool:
        """May a frame with this counter still be accepted? (The check
        before a fragment is stored; the window moves only after open.)"""
        return counter < self.recv_limit and self.window.check(counter)

    def open_frame(self, ciphertext, flags: int, counter: int, count: int, now: float):
        """The plaintext of an authenticated, fresh, reassembled BULK frame,
        or REPLAY / FORGED / TOO_OLD. The AD is rebuilt from the fields
        (index 0); the window moves only on success."""
        if counter >= self.recv_limit:
            return TOO_OLD
        if not self.window.check(counter):
            return REPLAY
        header = wire.bulk_header(self.local_index, counter, count, flags)
        try:
            plain = AEADS.get(self.recv_key).decrypt(nonce_bytes(counter), ciphertext, header)
        except InvalidTag:
            return FORGED
        self.window.update(counter)
        self.last_received = now
        return plain

    def open(self, datagram, counter: int, now: float):
        """The plaintext of an authenticated, fresh DATA datagram, or one of
        REPLAY / FORGED / TOO_OLD. The window moves only on success."""
        if counter >= self.recv_limit:
            return TOO_OLD
        if not self.window.check(counter):
            return REPLAY
        header = bytes(datagram[:wire.HEADER_DATA])
        try:
            plain = AEADS.get(self.recv_key).decrypt(nonce_bytes(counter),
                                           bytes(datagram[wire.HEADER_DATA:]), header)
        except InvalidTag:
            return FORGED
        self.window.update(counter)
        self.last_received = now
        return plain
