"""The legacy wire format written from docs/LEGACY.md alone, so
that the lab tests check camex against the spec and not against its own
codec: key derivation, encrypted frames (seal/open), control lines."""

import hashlib
import struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"CX2P"
HEADER_LEN = 27
TAG_LEN = 16
REGISTER, DATA, CONFIG = 1, 2, 3


def key(passphrase: str) -> bytes:
    """BLAKE2b with a 32-byte digest over the raw passphrase."""
    return hashlib.blake2b(passphrase.encode(), digest_size=32).digest()


def header(ptype: int, prefix: bytes, seq: int, length: int) -> bytes:
    return MAGIC + bytes([ptype]) + prefix + struct.pack("!Q", seq) + struct.pack("!H", length) \
        + struct.pack("!Q", seq)


def seal(k: bytes, ptype: int, prefix: bytes, seq: int, plaintext: bytes) -> bytes:
    hdr = header(ptype, prefix, seq, len(plaintext))
    return hdr + ChaCha20Poly1305(k).encrypt(prefix + struct.pack("!Q", seq), plaintext, hdr)


def open_frame(k: bytes, frame: bytes):
    """(type, prefix, seq, plaintext); raises ValueError on a bad frame and
    cryptography's InvalidTag on a wrong key."""
    if len(frame) < HEADER_LEN + TAG_LEN or frame[:4] != MAGIC:
        raise ValueError("not a CX2P frame")
    ptype, prefix = frame[4], frame[5:9]
    (nonce_seq,) = struct.unpack("!Q", frame[9:17])
    (length,) = struct.unpack("!H", frame[17:19])
    (seq,) = struct.unpack("!Q", frame[19:27])
    if len(frame) != length + HEADER_LEN + TAG_LEN or seq != nonce_seq:
        raise ValueError("length or sequence fields disagree")
    plaintext = ChaCha20Poly1305(k).decrypt(frame[5:17], frame[HEADER_LEN:], frame[:HEADER_LEN])
    return ptype, prefix, seq, plaintext
