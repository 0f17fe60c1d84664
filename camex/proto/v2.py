"""Scapy layers of the camex v2 protocol (docs/PROTOCOL.md §4).

Every v2 datagram starts with 0xC2 and a message type 1..6; `CamexV2` is
that common start (mark, type, the byte that DATA and BULK use for flags
and the other messages keep zero, and the byte BULK uses for its fragment
index), and `type` dispatches to one layer per message, as in Scapy's
WireGuard contrib:

    CamexV2 / CamexV2Init       C2 01 00 00 | sender | idlen | id | e | enc | mac1 | mac2
    CamexV2 / CamexV2Resp       C2 02 00 00 | receiver | e | enc | mac1
    CamexV2 / CamexV2Cookie     C2 03 00 00 | receiver | nonce | enc(cookie)
    CamexV2 / CamexV2Data       C2 04 flags 00 | receiver | counter | ciphertext | tag
    CamexV2 / CamexV2NoSession  C2 05 00 00 | index
    CamexV2 / CamexV2Bulk       C2 06 flags index | receiver | counter | count | 00 | 00 00 | slice

Indices and the counter are little-endian (XLEIntField, XLELongField); the
INIT's ID length is filled in from the ID when left at None. The plaintext
of a DATA datagram is `CamexV2Records` (u16be length + inner packet, a zero
length ends the list); `KeyLog` opens DATA with the keys of a key log
(`CAMEX_V2 <index> <key>` lines, PROTOCOL.md §10), and `seal_data` /
`sign_init` / `sign_resp` build valid datagrams from the layers.

BULK (docs/V2-BULK.md) carries one AEAD frame cut into up to 64 fragments,
one per datagram; the AD is the 20-byte header with the index byte 0.
`join_bulk` puts the fragments of one frame back together (any order),
`bulk_frames(rdpcap(f), keylog)` finds every frame of a packet list,
`KeyLog.open_bulk` / `decrypt_bulk` open the frame into `CamexV2BulkRecords`
(u16be length, u16be gso_size, IPv4 packet; gso_size > 0: a TSO
super-packet) and `seal_bulk` builds the fragments of a frame. The layers
of the plaintexts and of the handshake TLVs (with FEATURES, type 7) are in
v2_payload.py; `open_init` reads an INIT's request with the PSK.

In Scapy: `from camex.proto.v2 import *` (importing camex.proto already
hooks the dissection); e.g. `rdpcap(f)[0][CamexV2Data].counter`,
`decrypt(pkt[CamexV2], KeyLog.from_file("camex.keys")).packets()`.

Dissection is by content on any port (registered with registry.py ahead of
the legacy classifier, which would otherwise take anything on a camex port
for plaintext DATA): first byte 0xC2, type 1..6, at least 8 bytes - the
same test as the daemon's camex.v2.wire.is_v2.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from scapy.fields import (ByteEnumField, ByteField, ConditionalField,
                          FieldLenField, FlagsField, StrLenField, XByteField,
                          XLEIntField, XLELongField, XShortField, XStrField,
                          XStrFixedLenField)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Padding, bind_layers, bind_top_down

from camex.proto import registry
from camex.proto.fields import TailField
from camex.proto.v2_payload import (CamexV2BulkRecord, CamexV2BulkRecords,  # noqa: F401
                                    CamexV2Payload, CamexV2Record, CamexV2Records,
                                    bulk_records, records)
from camex.v2 import wire
from camex.v2.noise import HandshakeState, NoiseError, nonce_bytes
from camex.v2.session import AesKey, aead_for

T_BULK = wire.T_BULK
HEADER_BULK = wire.HEADER_BULK
MAX_FRAGMENTS = wire.BULK_MAX_FRAGMENTS
INDEX_AT = 3  # the byte of a BULK header that differs between fragments
TYPES = dict(wire.TYPE_NAMES)
FLAG_NAMES = ["CLOSE", "REKEY"]  # bit 0, bit 1 of DATA's (and BULK's) byte 2


class XTailField(TailField):
    """TailField shown in hex (ciphertexts, encrypted payloads)."""

    def i2repr(self, pkt, x):
        return XStrField.i2repr(self, pkt, x)


class _Fixed(Packet):
    """A message of fixed layout: bytes past it are padding, not a payload."""

    def default_payload_class(self, payload):
        return Padding


# ------------------------------------------------------------ common start


class CamexV2(Packet):
    """The first four bytes of every v2 datagram."""

    name = "camex v2"
    fields_desc = [
        XByteField("mark", wire.MARK),
        ByteEnumField("type", wire.T_DATA, TYPES),
        # DATA, BULK: flags (CLOSE, REKEY); every other message: reserved, zero.
        FlagsField("flags", 0, 8, FLAG_NAMES),
        # BULK: which fragment of the frame this is; every other message: zero.
        ConditionalField(ByteField("index", 0), lambda p: p.type == T_BULK),
        ConditionalField(XByteField("reserved", 0), lambda p: p.type != T_BULK),
    ]

    def mysummary(self):
        if self.type in (wire.T_DATA, T_BULK) and self.flags:
            return self.sprintf("camex v2 %type% [%flags%]")
        return self.sprintf("camex v2 %type%")


# ------------------------------------------------------------ messages


class CamexV2Init(Packet):
    """INIT (client -> server): the Noise message 1 between a clear header
    (sender index, client ID) and the two MACs."""

    name = "camex v2 INIT"
    fields_desc = [
        XLEIntField("sender_index", 0),
        FieldLenField("id_len", None, length_of="client_id", fmt="B"),
        StrLenField("client_id", b"", length_from=lambda p: p.id_len),
        XStrFixedLenField("ephemeral", b"\0" * wire.KEYLEN, wire.KEYLEN),
        # the request payload, Noise-encrypted, its tag included
        XTailField("encrypted_payload", b"\0" * wire.TAGLEN, 2 * wire.MACLEN),
        XStrFixedLenField("mac1", b"\0" * wire.MACLEN, wire.MACLEN),
        XStrFixedLenField("mac2", b"\0" * wire.MACLEN, wire.MACLEN),
    ]

    def extract_padding(self, s):
        return b"", s

    def mysummary(self):
        cid = bytes(self.client_id).decode("ascii", "backslashreplace")
        cookie = "" if bytes(self.mac2) == bytes(wire.MACLEN) else " mac2"
        return f"camex v2 INIT sender={self.sender_index:08x} id={cid!r}{cookie}"


class CamexV2Resp(Packet):
    """RESP (server -> client): Noise message 2 (the server's index is inside
    the encrypted part) and mac1."""

    name = "camex v2 RESP"
    fields_desc = [
        XLEIntField("receiver_index", 0),
        XStrFixedLenField("ephemeral", b"\0" * wire.KEYLEN, wire.KEYLEN),
        # Noise-encrypted: server index (u32le) + config payload, tag included
        XTailField("encrypted_payload", b"\0" * (4 + wire.TAGLEN), wire.MACLEN),
        XStrFixedLenField("mac1", b"\0" * wire.MACLEN, wire.MACLEN),
    ]

    def extract_padding(self, s):
        return b"", s

    def mysummary(self):
        return f"camex v2 RESP receiver={self.receiver_index:08x}"


class CamexV2Cookie(_Fixed):
    """COOKIE (server -> client): the cookie sealed for the INIT's sender."""

    name = "camex v2 COOKIE"
    fields_desc = [
        XLEIntField("receiver_index", 0),
        XStrFixedLenField("nonce", b"\0" * wire.NONCELEN, wire.NONCELEN),
        XStrFixedLenField("encrypted_cookie", b"\0" * (wire.COOKIELEN + wire.TAGLEN),
                          wire.COOKIELEN + wire.TAGLEN),
    ]

    def mysummary(self):
        return f"camex v2 COOKIE receiver={self.receiver_index:08x}"


class CamexV2Data(Packet):
    """DATA (both ways): receiver index and counter (the nonce), then the
    sealed records. The 16 bytes up to the counter are the AEAD's AD."""

    name = "camex v2 DATA"
    fields_desc = [
        XLEIntField("receiver_index", 0),
        XLELongField("counter", 0),
        XTailField("ciphertext", b"", wire.TAGLEN),
        XStrFixedLenField("tag", b"\0" * wire.TAGLEN, wire.TAGLEN),
    ]

    def extract_padding(self, s):
        return b"", s

    def mysummary(self):
        what = "keepalive" if not self.ciphertext else f"{len(self.ciphertext)} bytes sealed"
        flags = ""
        if isinstance(self.underlayer, CamexV2) and self.underlayer.flags:
            flags = self.underlayer.sprintf(" [%flags%]")
        return (f"camex v2 DATA receiver={self.receiver_index:08x} "
                f"counter={self.counter}{flags} ({what})")


class CamexV2NoSession(_Fixed):
    """NOSESSION (server -> client): the index a DATA named that the server
    does not know (unauthenticated by design, PROTOCOL.md §4.5)."""

    name = "camex v2 NOSESSION"
    fields_desc = [XLEIntField("index", 0)]

    def mysummary(self):
        return f"camex v2 NOSESSION index={self.index:08x}"


class CamexV2Bulk(Packet):
    """BULK (both ways): one fragment of a frame sealed once. The fragment
    index is byte 3 (CamexV2.index); receiver, counter (the frame's nonce,
    the same in every fragment) and the fragment count follow, then this
    fragment's slice of the frame's ciphertext||tag."""

    name = "camex v2 BULK"
    fields_desc = [
        XLEIntField("receiver_index", 0),
        XLELongField("counter", 0),
        ByteField("count", 1),
        XByteField("reserved1", 0),   # must be 0
        XShortField("reserved2", 0),  # must be 0
        XStrField("slice", b""),
    ]

    def extract_padding(self, s):
        return b"", s

    @property
    def fragment_index(self) -> int | None:
        u = self.underlayer
        return u.index if isinstance(u, CamexV2) and u.type == T_BULK else None

    def mysummary(self):
        flags = ""
        if isinstance(self.underlayer, CamexV2) and self.underlayer.flags:
            flags = self.underlayer.sprintf(" [%flags%]")
        i = self.fragment_index
        return (f"camex v2 BULK receiver={self.receiver_index:08x} counter={self.counter}"
                f"{flags} index={'?' if i is None else i} count={self.count} "
                f"({len(self.slice)} bytes)")


MESSAGE_CLASSES = {wire.T_INIT: CamexV2Init, wire.T_RESP: CamexV2Resp,
                   wire.T_COOKIE: CamexV2Cookie, wire.T_DATA: CamexV2Data,
                   wire.T_NOSESSION: CamexV2NoSession, T_BULK: CamexV2Bulk}
for _t, _cls in MESSAGE_CLASSES.items():
    bind_layers(CamexV2, _cls, type=_t)
# Building IP()/UDP()/CamexV2() fills in the reference port; dissection is by
# content (classify below), on any port.
bind_top_down(UDP, CamexV2, dport=registry.DEFAULT_PORTS[0])


# ------------------------------------------------------------ keys


class KeyLogError(ValueError):
    """A key log line that is not `CAMEX_V2 <8 hex digits> <64 hex digits>`."""


class Opened(NamedTuple):
    index: int
    key: bytes
    plaintext: bytes

    @property
    def label(self) -> str:
        """Short name of the key (first 8 hex digits of BLAKE2s(key))."""
        return hashlib.blake2s(self.key).hexdigest()[:8]


_LINE = re.compile(r"CAMEX_V2\s+([0-9A-Fa-f]{1,8})\s+([0-9A-Fa-f]{64})(?:\s+(aes-256-gcm))?\s*\Z")


class KeyLog:
    """Session keys from key log lines, by receiver index.

    An index normally has one key; a key log spanning daemon restarts may
    repeat an index with another key, so each index keeps a list and a DATA
    datagram is tried with the keys of its own index only (never all keys).
    Lines that are empty or start with `#` are skipped."""

    def __init__(self, lines: Iterable[str] = ()):
        self.keys: dict[int, list[bytes]] = {}
        self._aead: dict = {}   # key -> its AEAD object
        for n, line in enumerate(lines, 1):
            self.add_line(line, n)

    @classmethod
    def from_file(cls, path) -> KeyLog:
        log = cls()
        log.load(path)
        return log

    def load(self, path) -> int:
        """Add the lines of a key log file; returns how many keys it added.
        Raises OSError, or KeyLogError naming FILE:LINE."""
        before = len(self)
        with open(path, encoding="ascii", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    self.add_line(line)
                except KeyLogError as exc:
                    raise KeyLogError(f"{path}:{n}: {exc}") from None
        return len(self) - before

    def add_line(self, line: str, lineno: int | None = None) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        m = _LINE.match(line)
        if not m:
            where = f"line {lineno}: " if lineno else ""
            raise KeyLogError(f"{where}not a key log line: {line[:60]!r}")
        key = bytes.fromhex(m.group(2))
        self.add(int(m.group(1), 16), AesKey(key) if m.group(3) else key)

    def add(self, index: int, key: bytes) -> None:
        """`key` an AesKey for a session under AES-256-GCM."""
        keys = self.keys.setdefault(index, [])
        if key not in keys:
            keys.append(key)
            self._aead.setdefault(key, aead_for(key))

    def __len__(self) -> int:
        return sum(len(v) for v in self.keys.values())

    def has_index(self, index: int) -> bool:
        return index in self.keys

    def open(self, datagram) -> Opened | None:
        """Plaintext of a DATA datagram (bytes or a CamexV2 packet) with the
        key logged for its receiver index; None if no logged key opens it."""
        d = bytes(datagram)
        hdr = wire.parse_data_header(d)
        if hdr is None or d[0] != wire.MARK:
            return None
        _flags, receiver, counter = hdr
        head = d[:wire.HEADER_DATA]
        for key in self.keys.get(receiver, ()):
            try:
                plain = self._aead[key].decrypt(nonce_bytes(counter), d[wire.HEADER_DATA:], head)
            except InvalidTag:
                continue
            return Opened(receiver, key, plain)
        return None

    def open_bulk(self, header, ciphertext) -> Opened | None:
        """Plaintext of a BULK frame: `header` is the 20-byte header of any
        of its fragments (the index byte is zeroed here: that is the AD),
        `ciphertext` the slices joined in index order (tag included)."""
        head = bytearray(bytes(header)[:HEADER_BULK])
        if len(head) != HEADER_BULK or head[0] != wire.MARK or head[1] != T_BULK:
            return None
        head[INDEX_AT] = 0
        receiver = int.from_bytes(head[4:8], "little")
        counter = int.from_bytes(head[8:16], "little")
        for key in self.keys.get(receiver, ()):
            try:
                plain = self._aead[key].decrypt(nonce_bytes(counter), bytes(ciphertext),
                                                bytes(head))
            except InvalidTag:
                continue
            return Opened(receiver, key, plain)
        return None


def decrypt(pkt, keylog: KeyLog) -> CamexV2Records | None:
    """The records of a DATA datagram, or None if no logged key opens it."""
    opened = keylog.open(pkt)
    return None if opened is None else CamexV2Records(opened.plaintext)


def seal_data(receiver: int, counter: int, key: bytes, packets: Iterable = (),
              flags: int = 0) -> Packet:
    """A valid DATA datagram (CamexV2/CamexV2Data) carrying `packets` under
    `key` - what a peer holding that session key would send."""
    hdr = CamexV2(flags=flags) / CamexV2Data(receiver_index=receiver, counter=counter)
    head = bytes(hdr)[:wire.HEADER_DATA]
    sealed = aead_for(key).encrypt(nonce_bytes(counter), bytes(records(packets)), head)
    hdr[CamexV2Data].ciphertext = sealed[:-wire.TAGLEN]
    hdr[CamexV2Data].tag = sealed[-wire.TAGLEN:]
    return hdr


class Frame(NamedTuple):
    """The fragments of one BULK frame, joined: any fragment's header (the
    AD once its index byte is zeroed) and the ciphertext||tag."""
    header: bytes
    ciphertext: bytes


def join_bulk(fragments: Iterable) -> Frame | None:
    """Join the fragments of one frame (datagram bytes or CamexV2 packets,
    any order). None unless they are exactly fragments 0..n-1 of one frame:
    same flags, receiver, counter and count, zero reserved bytes, each
    index once."""
    by_index: dict[int, bytes] = {}
    common = None
    for f in fragments:
        d = bytes(f)
        if len(d) <= HEADER_BULK or d[0] != wire.MARK or d[1] != T_BULK or d[17:20] != bytes(3):
            return None
        same = d[:INDEX_AT] + d[INDEX_AT + 1:HEADER_BULK]
        if common is None:
            common = same
        elif same != common:
            return None
        if d[INDEX_AT] in by_index:
            return None
        by_index[d[INDEX_AT]] = d
    if common is None:
        return None
    count = common[16 - 1]  # byte 16 of the header, the index byte removed
    if not 1 <= count <= MAX_FRAGMENTS or sorted(by_index) != list(range(count)):
        return None
    return Frame(by_index[0][:HEADER_BULK],
                 b"".join(by_index[i][HEADER_BULK:] for i in range(count)))


def decrypt_bulk(fragments: Iterable, keylog: KeyLog) -> CamexV2BulkRecords | None:
    """The records of a BULK frame given all its fragments, or None if they
    do not make one frame or no logged key opens it."""
    frame = join_bulk(fragments)
    opened = None if frame is None else keylog.open_bulk(*frame)
    return None if opened is None else CamexV2BulkRecords(opened.plaintext)


class BulkFrame(NamedTuple):
    """One BULK frame found in a packet list (bulk_frames)."""
    receiver: int
    counter: int
    count: int                    # fragments the frame has
    fragments: list               # the CamexV2 layers seen, in capture order
    frame: Frame | None           # joined, or None: incomplete or inconsistent
    records: CamexV2BulkRecords | None   # opened with the key log, else None

    @property
    def missing(self) -> list:
        have = {f.index for f in self.fragments}
        return [i for i in range(self.count) if i not in have]


def bulk_frames(packets: Iterable, keylog: KeyLog | None = None) -> list:
    """The BULK frames in `packets` (e.g. rdpcap(...) or sniff() output):
    fragments grouped by receiver index and counter, in the order frames
    first appear, joined when complete and opened with `keylog` if given.
    Like Scapy's defragment() for IP fragments, for camex v2 BULK."""
    groups: dict[tuple, list] = {}
    for p in packets:
        layer = p.getlayer(CamexV2) if hasattr(p, "getlayer") else None
        if layer is None or not layer.haslayer(CamexV2Bulk):
            continue
        b = layer[CamexV2Bulk]
        groups.setdefault((b.receiver_index, b.counter), []).append(layer)
    out = []
    for (receiver, counter), frags in groups.items():
        unique = {bytes(f): f for f in frags}  # a duplicated datagram is one fragment
        frame = join_bulk(unique)
        opened = keylog.open_bulk(*frame) if frame is not None and keylog is not None else None
        out.append(BulkFrame(receiver, counter, frags[0][CamexV2Bulk].count, frags, frame,
                             None if opened is None else CamexV2BulkRecords(opened.plaintext)))
    return out


def seal_bulk(receiver: int, counter: int, key: bytes, items: Iterable = (),
              size: int = 1472, flags: int = 0) -> list:
    """The fragments (CamexV2/CamexV2Bulk packets) of a valid BULK frame
    carrying `items` ((gso_size, packet) pairs or packets) under `key`,
    cut for datagrams of `size` bytes as a sender with that path would."""
    room = size - HEADER_BULK
    if room <= 0:
        raise ValueError(f"datagram size {size} leaves no room after the header")
    plain = bytes(bulk_records(items))
    count = -(-(len(plain) + wire.TAGLEN) // room)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"frame of {len(plain)} bytes needs {count} fragments "
                         f"(at most {MAX_FRAGMENTS})")
    head = bytes(CamexV2(type=T_BULK, flags=flags, index=0) /
                 CamexV2Bulk(receiver_index=receiver, counter=counter, count=count))
    sealed = aead_for(key).encrypt(nonce_bytes(counter), plain, head)
    return [CamexV2(type=T_BULK, flags=flags, index=i) /
            CamexV2Bulk(receiver_index=receiver, counter=counter, count=count,
                        slice=sealed[i * room:(i + 1) * room]) for i in range(count)]


def open_init(pkt, psk: bytes) -> CamexV2Payload | None:
    """The request of an INIT (its TLVs: mode, address, MTU, features),
    read with the PSK as the server does (Noise NNpsk0 message 1 needs no
    DH to open); None if the datagram is no INIT or the PSK does not open it."""
    init = wire.parse_init(bytes(pkt))
    if init is None:
        return None
    try:
        plain = HandshakeState("NNpsk0", False, init.prologue, psk).read_message(init.noise)
    except NoiseError:
        return None
    return CamexV2Payload(plain)


def sign_init(pkt: Packet, psk: bytes, cookie: bytes | None = None) -> Packet:
    """Set an INIT's mac1 (and mac2 from a cookie, else zeros) for `psk`."""
    init = pkt[CamexV2Init]
    init.mac1 = wire.mac(wire.mac1_key(psk), bytes(pkt)[:-2 * wire.MACLEN])
    init.mac2 = wire.mac(cookie, bytes(pkt)[:-wire.MACLEN]) if cookie else bytes(wire.MACLEN)
    return pkt


def sign_resp(pkt: Packet, psk: bytes) -> Packet:
    """Set a RESP's mac1 for `psk`."""
    pkt[CamexV2Resp].mac1 = wire.mac(wire.mac1_key(psk), bytes(pkt)[:-wire.MACLEN])
    return pkt


# ------------------------------------------------------------ classifier


def classify(udp, payload: bytes, on_port: bool):
    """v2 classifier for registry: any port, by content (wire.is_v2)."""
    if wire.is_v2(payload):
        return CamexV2
    return None


def register() -> None:
    # Ahead of the legacy classifier (100), which claims every payload on a
    # camex port as plaintext DATA.
    registry.register_classifier("v2", classify, priority=50)


__all__ = ["CamexV2", "CamexV2Init", "CamexV2Resp", "CamexV2Cookie", "CamexV2Data",
           "CamexV2NoSession", "CamexV2Bulk", "CamexV2Record", "CamexV2Records",
           "CamexV2BulkRecord", "CamexV2BulkRecords", "CamexV2Payload", "KeyLog",
           "KeyLogError", "Opened", "Frame", "BulkFrame", "bulk_frames", "decrypt",
           "decrypt_bulk", "join_bulk",
           "records", "bulk_records", "seal_data", "seal_bulk", "open_init", "sign_init",
           "sign_resp", "classify", "register", "MESSAGE_CLASSES"]
