"""Stateless cookies against handshake floods (after WireGuard's design).

Server: when more mac1-valid INITs arrive per second than it is willing to
answer with Diffie-Hellman, an INIT must also carry a valid mac2, keyed with
a cookie = MAC(secret, source IP and port); the secret changes every two
minutes and is never stored per client. An INIT without it gets a COOKIE
reply - 52 bytes, smaller than the INIT, so no amplification - and nothing
else: no DH, no state. The cookie travels encrypted under a key derived
from the client's PSK, with the INIT's mac1 as associated data, so only the
sender of that very INIT (holding the PSK) can read and use it, and it is
only useful from the source address it was made for.
"""

from __future__ import annotations

import ipaddress

from cryptography.exceptions import InvalidTag
from ..base.aead import ChaCha20Poly1305

from . import wire


def addr_bytes(addr) -> bytes:
    return ipaddress.ip_address(addr[0]).packed + int(addr[1]).to_bytes(2, "big")


class LoadMeter:
    """Counts expensive handshakes per second; `hit` says whether the server
    is now 'under load' (more than `threshold` in this or the last second)."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.second: int | None = None
        self.count = 0
        self.previous = 0

    def hit(self, now: float) -> bool:
        sec = int(now)
        if sec != self.second:
            self.previous = self.count if self.second is not None and sec == self.second + 1 else 0
            self.second, self.count = sec, 0
        self.count += 1
        return max(self.count, self.previous) > self.threshold


class CookieMaker:
    def __init__(self, rng, life: float):
        self.rng = rng
        self.life = life
        self.secret = rng(32)
        self.born: float | None = None

    def cookie(self, addr, now: float) -> bytes:
        if self.born is None or now - self.born >= self.life:
            self.secret, self.born = self.rng(32), now
        return wire.mac(self.secret, addr_bytes(addr))

    def mac2_ok(self, init: wire.Init, addr, now: float) -> bool:
        return wire.equal(wire.mac(self.cookie(addr, now), init.mac2_span), init.mac2)

    def reply(self, init: wire.Init, psk: bytes, addr, now: float) -> bytes:
        nonce = self.rng(wire.NONCELEN)
        sealed = ChaCha20Poly1305(wire.cookie_key(psk)).encrypt(
            nonce, self.cookie(addr, now), init.mac1)
        return wire.pack_cookie(init.sender, nonce, sealed)


def open_cookie(psk: bytes, sent_mac1: bytes, nonce: bytes, sealed: bytes):
    """The cookie from a COOKIE reply to our INIT with `sent_mac1`, or None."""
    try:
        return ChaCha20Poly1305(wire.cookie_key(psk)).decrypt(nonce, sealed, sent_mac1)
    except InvalidTag:
        return None
