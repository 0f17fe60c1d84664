"""The Noise framework's state objects for the handshake camex v2 uses.

camex v2 runs Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s (docs/PROTOCOL.md says
why). This module implements the parts of the Noise specification
(revision 34, sections 5 and 9) that pattern needs, on top of the
`cryptography` package (X25519, ChaCha20-Poly1305) and hashlib's BLAKE2s:

- `CipherState`: a key and a 64-bit nonce; nonce encoded as 4 zero bytes
  then the counter little-endian (the ChaChaPoly cipher functions);
- `SymmetricState`: chaining key ck and handshake hash h, MixKey, MixHash,
  MixKeyAndHash, EncryptAndHash, DecryptAndHash, Split;
- `HandshakeState`: runs a token list for the patterns NN, NNpsk0 and NNpsk2
  (the latter two differ only in where the psk token sits; all three are
  checked against the published cacophony test vectors).

HKDF and HMAC are those of the Noise spec (HMAC-BLAKE2s, RFC 2104 with a
64-byte block), not RFC 5869's HKDF with a salt and info string.
"""

from __future__ import annotations


from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey, X25519PublicKey)
from ..base.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import BLAKE2s
from cryptography.hazmat.primitives.hmac import HMAC

from ..base import blake2

HASHLEN = 32
DHLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 1  # reserved by the spec: never used as a nonce

PATTERNS = {
    "NN": (("e",), ("e", "ee")),
    "NNpsk0": (("psk", "e"), ("e", "ee")),
    "NNpsk2": (("e",), ("e", "ee", "psk")),
}


class NoiseError(Exception):
    """A handshake message failed to authenticate or was malformed."""


def blake2s(data: bytes) -> bytes:
    return blake2.blake2s(data).digest()


def hmac_blake2s(key: bytes, data: bytes) -> bytes:
    h = HMAC(key, BLAKE2s(32))
    h.update(data)
    return h.finalize()


def hkdf(ck: bytes, ikm: bytes, outputs: int):
    """Noise's HKDF(chaining_key, input_key_material, num_outputs)."""
    temp = hmac_blake2s(ck, ikm)
    out1 = hmac_blake2s(temp, b"\x01")
    out2 = hmac_blake2s(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, hmac_blake2s(temp, out2 + b"\x03")


def nonce_bytes(n: int) -> bytes:
    """ChaChaPoly nonce: 32 bits of zeros, then the counter little-endian."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def public_bytes(key: X25519PrivateKey) -> bytes:
    # public_bytes_raw (cryptography >= 40): the serialization package
    # would import SSH/RSA/EC support, 1.1 MiB resident that v2 never uses.
    pub = key.public_key()
    try:
        return pub.public_bytes_raw()
    except AttributeError:
        # cryptography < 40 (Debian 12's 38): only the serialization form.
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # low-order point: all-zero shared secret
        raise NoiseError("invalid DH public key") from exc


class CipherState:
    __slots__ = ("key", "aead", "n")

    def __init__(self, key: bytes | None = None):
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        self.key = key
        self.aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    def has_key(self) -> bool:
        return self.key is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.aead is None:
            return bytes(plaintext)
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        out = self.aead.encrypt(nonce_bytes(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.aead is None:
            return bytes(ciphertext)
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            out = self.aead.decrypt(nonce_bytes(self.n), ciphertext, ad)
        except InvalidTag as exc:
            raise NoiseError("authentication failed") from exc
        self.n += 1  # only after success, as the spec requires
        return out

    def copy(self) -> CipherState:
        other = CipherState(self.key)
        other.n = self.n
        return other


class SymmetricState:
    __slots__ = ("cs", "ck", "h")

    def __init__(self, protocol_name: bytes):
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = blake2s(protocol_name)
        self.ck = self.h
        self.cs = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cs.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = blake2s(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cs.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self):
        k1, k2 = hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)

    def copy(self) -> SymmetricState:
        other = SymmetricState.__new__(SymmetricState)
        other.cs, other.ck, other.h = self.cs.copy(), self.ck, self.h
        return other


class HandshakeState:
    """One side of one handshake. Discard it after any NoiseError (the
    spec leaves the state undefined after a failed read); use `copy()`
    first when a forged message must not spoil the real one."""

    def __init__(self, pattern: str, initiator: bool, prologue: bytes = b"",
                 psk: bytes | None = None, e: X25519PrivateKey | None = None,
                 dh_name: str = "25519", cipher_name: str = "ChaChaPoly",
                 hash_name: str = "BLAKE2s"):
        self.messages = PATTERNS[pattern]
        self.psk_mode = any("psk" in m for m in self.messages)
        if self.psk_mode and (psk is None or len(psk) != 32):
            raise ValueError("a psk pattern needs a 32-byte psk")
        name = f"Noise_{pattern}_{dh_name}_{cipher_name}_{hash_name}".encode()
        self.ss = SymmetricState(name)
        self.ss.mix_hash(prologue)
        self.initiator = initiator
        self.psk = psk
        self.e = e
        self.re: bytes | None = None
        self.index = 0  # next message pattern to process

    @property
    def finished(self) -> bool:
        return self.index >= len(self.messages)

    @property
    def handshake_hash(self) -> bytes:
        return self.ss.h

    def _my_turn(self) -> bool:
        return (self.index % 2 == 0) == self.initiator

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.finished or not self._my_turn():
            raise NoiseError("not our turn to write")
        out = bytearray()
        for token in self.messages[self.index]:
            if token == "e":
                if self.e is None:
                    self.e = X25519PrivateKey.generate()
                pub = public_bytes(self.e)
                out += pub
                self.ss.mix_hash(pub)
                if self.psk_mode:
                    self.ss.mix_key(pub)
            elif token == "ee":
                self.ss.mix_key(self._ee())
            elif token == "psk":
                self.ss.mix_key_and_hash(self._psk())
        out += self.ss.encrypt_and_hash(payload)
        self.index += 1
        return bytes(out)

    def _ee(self) -> bytes:
        """The "ee" DH: both ephemerals exist by then in a well-formed
        pattern; a NoiseError, not a crash, if the pattern says otherwise."""
        if self.e is None or self.re is None:
            raise NoiseError("ee before both ephemeral keys")
        return dh(self.e, self.re)

    def _psk(self) -> bytes:
        if self.psk is None:
            raise NoiseError("psk token without a PSK")
        return self.psk

    def read_message(self, message: bytes) -> bytes:
        if self.finished or self._my_turn():
            raise NoiseError("not our turn to read")
        message = memoryview(message)  # type: ignore[assignment]  # slices without copies
        pos = 0
        for token in self.messages[self.index]:
            if token == "e":
                if len(message) < pos + DHLEN:
                    raise NoiseError("message too short")
                self.re = bytes(message[pos:pos + DHLEN])
                pos += DHLEN
                self.ss.mix_hash(self.re)
                if self.psk_mode:
                    self.ss.mix_key(self.re)
            elif token == "ee":
                self.ss.mix_key(self._ee())
            elif token == "psk":
                self.ss.mix_key_and_hash(self._psk())
        rest = message[pos:]
        if self.ss.cs.has_key() and len(rest) < TAGLEN:
            raise NoiseError("message too short")
        payload = self.ss.decrypt_and_hash(bytes(rest))
        self.index += 1
        return payload

    def split(self):
        """(send, receive) CipherStates for this side, after the last message."""
        if not self.finished:
            raise NoiseError("handshake not finished")
        c1, c2 = self.ss.split()
        return (c1, c2) if self.initiator else (c2, c1)

    def copy(self) -> HandshakeState:
        other = HandshakeState.__new__(HandshakeState)
        other.messages, other.psk_mode = self.messages, self.psk_mode
        other.ss = self.ss.copy()
        other.initiator, other.psk, other.e, other.re = (
            self.initiator, self.psk, self.e, self.re)
        other.index = self.index
        return other
