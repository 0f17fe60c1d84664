"""The legacy ("v1", magic CX2P) wire format: the fast codec of the data path.

Byte layouts follow docs/LEGACY.md. This module is pure: bytes
in, bytes out, no sockets and no clock, so the daemon, the Scapy layers'
tests and the dissector all check themselves against the same functions.
"""

# No `from __future__ import annotations` here: it makes the NamedTuples'
# field annotations strings, which typing compiles with compile(), and the
# first compile() of a process builds the compiler's AST types (~0.3 MiB
# resident for the daemon's lifetime, which the encrypted floor never pays).
import struct
from typing import NamedTuple, Optional

from ..base.blake2 import blake2b

MAGIC = b"CX2P"
T_REGISTER = 1
T_DATA = 2
T_CONFIG = 3
TYPE_NAMES = {T_REGISTER: "REGISTER", T_DATA: "DATA", T_CONFIG: "CONFIG"}

# magic, type, nonce prefix, nonce sequence, plaintext length, sequence
HEADER = struct.Struct("!4sB4sQHQ")
HEADER_LEN = HEADER.size  # 27
TAG_LEN = 16
OVERHEAD_ENC = HEADER_LEN + TAG_LEN  # 43
# Outer IPv4 + UDP headers: what the tunnel costs on the path in plaintext.
OUTER_IP_UDP = 28
MAX_PLAINTEXT = 0xFFFF

MAX_CONTROL_LEN = 1023
MAX_VALUE_LEN = 63
MAX_CLIENT_ID_LEN = 31
MAX_ROUTES = 16
# Registered clients at most (--max-clients). A plaintext REGISTER needs no
# key and may name any address, so without a bound forged sources could
# grow the table (~1.5 KiB each) until the daemon dies; 65536 is a /16.
# Here, not in camex.legacy.server, so that a client's option parser need
# not load the server core.
MAX_CLIENTS = 65536
MIN_MTU, MAX_MTU = 576, 9000
PASSPHRASE_MIN, PASSPHRASE_MAX = 1, 63


class CodecError(ValueError):
    """A datagram or control message that does not follow the format."""


# ---------------------------------------------------------------- keys


def derive_key(passphrase: bytes) -> bytes:
    """The legacy key: unkeyed BLAKE2b-256 of the raw passphrase bytes."""
    if not PASSPHRASE_MIN <= len(passphrase) <= PASSPHRASE_MAX:
        raise CodecError(
            f"passphrase must be {PASSPHRASE_MIN} to {PASSPHRASE_MAX} bytes, "
            f"got {len(passphrase)}"
        )
    return blake2b(passphrase, digest_size=32).digest()


def fingerprint(key: bytes) -> str:
    """What the legacy daemon prints at start-up: BLAKE2b-128 of the key."""
    return blake2b(key, digest_size=16).hexdigest()


def new_aead(key: bytes):
    """cryptography's ChaCha20Poly1305 for a key (what seal and open_datagram
    take). `cryptography` is imported here, not at the top: a plaintext
    daemon never loads it (6.6 MiB of resident memory)."""
    from ..base.aead import ChaCha20Poly1305
    return ChaCha20Poly1305(key)


def __getattr__(name: str):
    # `codec.InvalidTag` is cryptography's exception, imported on first
    # lookup. An `except codec.InvalidTag:` clause looks it up only when an
    # exception reaches it, i.e. after a new_aead object failed to open a
    # datagram, so a plaintext daemon never imports cryptography through it.
    if name == "InvalidTag":
        from cryptography.exceptions import InvalidTag
        globals()["InvalidTag"] = InvalidTag  # later lookups: a plain attribute
        return InvalidTag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------ encrypted framing


class Header(NamedTuple):
    type: int
    prefix: bytes  # 4-byte sender prefix of the nonce
    seq: int
    length: int  # plaintext length

    @property
    def nonce(self) -> bytes:
        return self.prefix + self.seq.to_bytes(8, "big")


_new_tuple = tuple.__new__


def pack_header(ptype: int, prefix: bytes, seq: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, ptype, prefix, seq, length, seq)


def parse_header(buf) -> Header:
    """Validate the outer shape of an encrypted datagram (no crypto yet).

    Rejects what the spec says a receiver drops: too short, wrong magic, a
    total length that is not L + 43. A nonce whose counter differs from the
    sequence field is rejected too: no honest sender produces one, and the
    replay check must judge the counter the AEAD actually used.
    """
    if len(buf) < OVERHEAD_ENC:
        raise CodecError(f"datagram of {len(buf)} bytes is shorter than {OVERHEAD_ENC}")
    magic, ptype, prefix, nseq, length, seq = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise CodecError("bad magic")
    if len(buf) != length + OVERHEAD_ENC:
        raise CodecError(f"length field {length} does not match datagram of {len(buf)} bytes")
    if nseq != seq:
        raise CodecError("nonce counter and sequence field differ")
    if ptype not in TYPE_NAMES:
        raise CodecError(f"unknown type {ptype}")
    # tuple.__new__: a C call; Header(...) runs namedtuple's Python __new__
    # (this is once per encrypted datagram, see docs/FASTPATH.md section 6).
    return _new_tuple(Header, (ptype, bytes(prefix), seq, length))


def seal(aead, ptype: int, prefix: bytes, seq: int, plaintext: bytes) -> bytes:
    """Encrypt one datagram; `aead` is a cryptography ChaCha20Poly1305."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise CodecError("plaintext too long")
    header = pack_header(ptype, prefix, seq, len(plaintext))
    return header + aead.encrypt(prefix + seq.to_bytes(8, "big"), plaintext, header)


def open_datagram(aead, buf, header: Optional[Header] = None) -> bytes:
    """Authenticate and decrypt; raises InvalidTag (cryptography's, also
    `codec.InvalidTag`) on failure."""
    if header is None:
        header = parse_header(buf)
    mv = memoryview(buf)
    # header.nonce, without the property's call
    return aead.decrypt(header[1] + header[2].to_bytes(8, "big"), mv[HEADER_LEN:],
                        mv[:HEADER_LEN])


def looks_encrypted(buf) -> bool:
    """True if the datagram has the shape of an encrypted one (magic + binary type)."""
    return len(buf) >= 5 and buf[0] == 0x43 and bytes(buf[:4]) == MAGIC and buf[4] in TYPE_NAMES


# ------------------------------------------------------- control messages


class Control(NamedTuple):
    """A parsed control line: verb and its KEY=VALUE fields in wire order."""

    verb: str
    fields: tuple  # ((key, value), ...)
    bare: tuple = ()  # tokens without '=' (the old `REGISTER 10.0.0.2` form)

    def get(self, key: str, default=None):
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> list:
        return [v for k, v in self.fields if k == key]


def is_control(buf) -> bool:
    """Plaintext mode: control text starts with CX2P followed by a space."""
    # The first byte decides almost every time (IPv4 data starts 0x45) and
    # costs an int compare; slicing a memoryview to compare it with bytes
    # cost a third of a plaintext relay's time on 64-byte packets.
    return len(buf) >= 5 and buf[0] == 0x43 and bytes(buf[:5]) == b"CX2P "


def parse_control(buf) -> Control:
    if len(buf) > MAX_CONTROL_LEN + 1:
        raise CodecError(f"control message of {len(buf)} bytes is too long")
    try:
        text = bytes(buf).decode("ascii")
    except UnicodeDecodeError:
        raise CodecError("control message is not ASCII") from None
    if text.endswith("\n"):
        text = text[:-1]
    if "\n" in text or "\0" in text:
        raise CodecError("control message has more than one line")
    tokens = text.split(" ")
    tokens = [t for t in tokens if t]
    if len(tokens) < 2 or tokens[0] != "CX2P":
        raise CodecError("control message does not start with 'CX2P VERB'")
    verb = tokens[1]
    fields, bare = [], []
    for tok in tokens[2:]:
        key, eq, value = tok.partition("=")
        if not eq:
            bare.append(tok)
            continue
        if not key or not 1 <= len(value) <= MAX_VALUE_LEN:
            raise CodecError(f"bad field {tok[:40]!r}")
        fields.append((key, value))
    return Control(verb, tuple(fields), tuple(bare))


def format_control(verb: str, fields) -> bytes:
    parts = ["CX2P", verb]
    for key, value in fields:
        value = str(value)
        if not 1 <= len(value) <= MAX_VALUE_LEN or " " in value or "\n" in value:
            raise CodecError(f"bad value for {key}: {value!r}")
        parts.append(f"{key}={value}")
    line = (" ".join(parts) + "\n").encode("ascii")
    if len(line) > MAX_CONTROL_LEN:
        raise CodecError("control message too long")
    return line


def register_manual(local_ip: str) -> bytes:
    return format_control("REGISTER", [("MODE", "MANUAL"), ("LOCAL_IP", local_ip)])


def register_auto(client_id: str) -> bytes:
    return format_control("REGISTER", [("MODE", "AUTO"), ("CLIENT_ID", client_id)])


def config_message(client_id, mtu, local_cidr, gateway_ip, routes=()) -> bytes:
    """CONFIG in the field order of the spec; empty fields are left out."""
    fields = [("CLIENT_ID", client_id), ("MTU", mtu), ("LOCAL_CIDR", local_cidr),
              ("GATEWAY_IP", gateway_ip)]
    fields = [(k, v) for k, v in fields if v not in (None, "")]
    fields += [("ROUTE_CIDR", r) for r in list(routes)[:MAX_ROUTES]]
    return format_control("CONFIG", fields)


# ------------------------------------------------------------ inner IPv4


def inner_ipv4_dst(packet) -> Optional[bytes]:
    """Destination address (4 bytes) of an inner IPv4 packet, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return bytes(packet[16:20])


def inner_ipv4_src(packet) -> Optional[bytes]:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return bytes(packet[12:16])
