"""ChaCha20-Poly1305 and AES-256-GCM from `cryptography`, on every
version camex supports.

cryptography 41 and later take any buffer (camex hands the AEAD
memoryviews of its receive buffers, no copy per packet); older ones, like
Debian 12's 38, take only bytes. There the class below copies each
argument into bytes first: the same results, one copy more per packet.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import aead as _aead

ChaCha20Poly1305 = _aead.ChaCha20Poly1305
AESGCM = _aead.AESGCM


def _bytes_only(base):
    """`base` with every argument copied into bytes first."""
    class Aead(base):
        __slots__ = ()

        def encrypt(self, nonce, data, associated_data):
            return super().encrypt(bytes(nonce), bytes(data),
                                   None if associated_data is None else bytes(associated_data))

        def decrypt(self, nonce, data, associated_data):
            return super().decrypt(bytes(nonce), bytes(data),
                                   None if associated_data is None else bytes(associated_data))
    Aead.__name__ = Aead.__qualname__ = base.__name__
    return Aead


try:
    ChaCha20Poly1305(bytes(32)).encrypt(bytes(12), memoryview(b""), None)
except TypeError:
    ChaCha20Poly1305 = _bytes_only(_aead.ChaCha20Poly1305)  # type: ignore[misc]
    AESGCM = _bytes_only(_aead.AESGCM)  # type: ignore[misc]
