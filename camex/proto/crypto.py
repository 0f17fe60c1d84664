"""Decrypting and sealing CX2P layers with the daemon's codec.

There is one AEAD implementation in camex: camex.legacy.codec (seal,
parse_header, open_datagram). These helpers only move bytes between Scapy
packets and that codec, so a layer can never disagree with the daemon.
"""

from __future__ import annotations

from typing import NamedTuple
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from camex.base.aead import ChaCha20Poly1305
from scapy.packet import Packet, Raw

from camex.legacy import codec
from camex.proto.legacy import CX2PControl, CX2PEncrypted, inner_class


class NoKeyError(ValueError):
    """No passphrase of the key ring authenticates the datagram."""


class LegacyKey(NamedTuple):
    label: str
    key: bytes
    aead: ChaCha20Poly1305

    @classmethod
    def from_passphrase(cls, passphrase, label: str | None = None) -> LegacyKey:
        if isinstance(passphrase, str):
            passphrase = passphrase.encode()
        key = codec.derive_key(passphrase)
        return cls(label or codec.fingerprint(key)[:8], key, ChaCha20Poly1305(key))


class Opened(NamedTuple):
    header: codec.Header
    key: LegacyKey
    plaintext: bytes


class KeyRing:
    """Passphrases tried in order, like the server's key store."""

    def __init__(self, passphrases: Iterable = ()):
        self.keys: list[LegacyKey] = []
        for p in passphrases:
            self.add(p)

    def add(self, passphrase, label: str | None = None) -> LegacyKey:
        k = LegacyKey.from_passphrase(passphrase, label)
        self.keys.append(k)
        return k

    def __len__(self):
        return len(self.keys)

    def open(self, datagram) -> Opened:
        """Authenticate and decrypt; CodecError if malformed, NoKeyError if no key fits."""
        datagram = bytes(datagram)
        header = codec.parse_header(datagram)
        for k in self.keys:
            try:
                return Opened(header, k, codec.open_datagram(k.aead, datagram, header))
            except InvalidTag:
                continue
        raise NoKeyError(f"no key opens {codec.TYPE_NAMES[header.type]} seq={header.seq}")


def _keyring(keys) -> KeyRing:
    if isinstance(keys, KeyRing):
        return keys
    if isinstance(keys, (bytes, str, LegacyKey)):
        keys = [keys]
    ring = KeyRing()
    for k in keys:
        if isinstance(k, LegacyKey):
            ring.keys.append(k)
        else:
            ring.add(k)
    return ring


def plaintext_layer(ptype: int, plaintext: bytes) -> Packet:
    """The plaintext of a datagram as a layer: control text or inner packet."""
    try:
        if ptype in (codec.T_REGISTER, codec.T_CONFIG) and plaintext[:5] == b"CX2P ":
            return CX2PControl(plaintext)
        if ptype == codec.T_DATA:
            return inner_class(plaintext)(plaintext)
    except Exception:  # Scapy raises on a top-level packet too short for its header
        pass
    return Raw(plaintext)


def decrypt(pkt: Packet, keys) -> Packet:
    """Plaintext layer of a CX2PEncrypted packet (or of a packet holding one).

    `keys`: a KeyRing, a passphrase, or a list of passphrases.
    Raises codec.CodecError (malformed) or NoKeyError.
    """
    enc = pkt[CX2PEncrypted] if not isinstance(pkt, CX2PEncrypted) else pkt
    opened = _keyring(keys).open(bytes(enc))
    return plaintext_layer(opened.header.type, opened.plaintext)


def _ptype_for(inner) -> int:
    if isinstance(inner, Packet):
        ctl = inner.getlayer(CX2PControl)
        if ctl is not None:
            return {b"REGISTER": codec.T_REGISTER, b"CONFIG": codec.T_CONFIG}.get(
                bytes(ctl.verb), codec.T_DATA)
        return codec.T_DATA
    data = bytes(inner)
    if data.startswith(b"CX2P REGISTER"):
        return codec.T_REGISTER
    if data.startswith(b"CX2P CONFIG"):
        return codec.T_CONFIG
    return codec.T_DATA


def seal(inner, key, prefix: bytes = b"\0\0\0\0", seq: int = 0,
         ptype: int | None = None) -> CX2PEncrypted:
    """Encrypt `inner` (a packet or bytes) into a CX2PEncrypted packet.

    `key` is a passphrase or LegacyKey; the type follows the inner layer
    (control verb or DATA) unless `ptype` is given.
    """
    if not isinstance(key, LegacyKey):
        key = LegacyKey.from_passphrase(key)
    if ptype is None:
        ptype = _ptype_for(inner)
    wire = codec.seal(key.aead, ptype, bytes(prefix), seq, bytes(inner))
    return CX2PEncrypted(wire)
