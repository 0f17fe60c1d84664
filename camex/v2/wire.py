"""Every camex v2 message, byte by byte (docs/PROTOCOL.md has the tables).

All v2 datagrams start with the byte 0xC2 and a message type 1..5. Legacy
datagrams start with 0x4X/0x6X (plaintext IPv4/IPv6) or "CX2P" (0x43...),
so the first byte alone tells the protocols apart on a shared port.

    INIT      C2 01 00 00 | sender u32 | idlen u8 | id | e[32] | enc(payload) | mac1[16] | mac2[16]
    RESP      C2 02 00 00 | receiver u32 | e[32] | enc(sender u32 | payload) | mac1[16]
    COOKIE    C2 03 00 00 | receiver u32 | nonce[12] | enc(cookie[16])
    DATA      C2 04 flags 00 | receiver u32 | counter u64 | enc(records)
    NOSESSION C2 05 00 00 | index u32
    BULK      C2 06 flags index | receiver u32 | counter u64 | count u8 | 00 | 00 00 | slice
              (one fragment of a frame: enc(bulk records) cut into `count` slices)

Integers are little-endian (as the Noise nonce), except inside payloads
(TLV and record lengths, MTU: network byte order). Parsing functions
return None for anything malformed; they never raise on network input.
"""

from __future__ import annotations

import ipaddress
import re
import struct

from ..base.blake2 import blake2s, compare_digest
from .framing import MAX_GSO_BYTES  # what one UDP (GSO) send carries
from ..base.value import Value

MARK = 0xC2
T_INIT, T_RESP, T_COOKIE, T_DATA, T_NOSESSION, T_BULK = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {T_INIT: "INIT", T_RESP: "RESP", T_COOKIE: "COOKIE",
              T_DATA: "DATA", T_NOSESSION: "NOSESSION", T_BULK: "BULK"}
T_MAX = T_BULK

FLAG_CLOSE = 0x01  # DATA: the sender ends this session (shutdown): handshake again
FLAG_REKEY = 0x02  # DATA from the responder: "please start a new handshake"

KEYLEN = 32
TAGLEN = 16
MACLEN = 16
COOKIELEN = 16
NONCELEN = 12
MAX_ID = 31
ID_RE = re.compile(rb"[A-Za-z0-9._:-]*\Z")

HEADER_DATA = 16  # C2 04 flags 00, receiver, counter: the AEAD's associated data
INIT_MIN = 4 + 4 + 1 + KEYLEN + TAGLEN + 2 * MACLEN  # 89 + len(id) + payload
RESP_MIN = 4 + 4 + KEYLEN + 4 + TAGLEN + MACLEN  # 76 + payload
COOKIE_LEN = 4 + 4 + NONCELEN + COOKIELEN + TAGLEN  # 52
DATA_MIN = HEADER_DATA + TAGLEN  # 32: a keepalive
NOSESSION_LEN = 8
OVERHEAD = DATA_MIN + 2  # one inner packet: header, tag, record length

PROTOCOL_NAME = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s"
PROLOGUE_LABEL = b"camex v2"
MAC1_LABEL = b"camex v2 mac1"
COOKIE_LABEL = b"camex v2 cookie"

_U32 = struct.Struct("<I")
_DATA_HDR = struct.Struct("<BBBBIQ")


def msg_type(datagram) -> int:
    """The v2 message type of a datagram, 0 if it is not a v2 datagram."""
    if len(datagram) >= 8 and datagram[0] == MARK and 1 <= datagram[1] <= T_MAX:
        return datagram[1]
    return 0


def is_v2(datagram) -> bool:
    return msg_type(datagram) != 0


# --- keyed hashes ---------------------------------------------------------

def mac(key: bytes, data) -> bytes:
    return blake2s(data, key=key, digest_size=MACLEN).digest()


def mac1_key(psk: bytes) -> bytes:
    return blake2s(MAC1_LABEL + psk).digest()


def cookie_key(psk: bytes) -> bytes:
    return blake2s(COOKIE_LABEL + psk).digest()


def equal(a, b) -> bool:
    return compare_digest(bytes(a), bytes(b))


# --- INIT -----------------------------------------------------------------

# The records below are plain classes rather than dataclasses: `dataclasses`
# imports `inspect`, 1.2 MiB of the daemon's resident memory.
# __slots__: the server keeps a Request and a Config per client.

class Init:
    __slots__ = ("sender", "client_id", "prologue", "noise", "mac1", "mac2",
                 "mac1_span", "mac2_span")

    def __init__(self, sender: int, client_id: str, prologue: bytes, noise: bytes,
                 mac1: bytes, mac2: bytes, mac1_span: bytes, mac2_span: bytes):
        self.sender = sender
        self.client_id = client_id
        self.prologue = prologue    # PROLOGUE_LABEL + the bytes before e (header .. id)
        self.noise = noise          # e || encrypted payload: Noise message 1
        self.mac1 = mac1
        self.mac2 = mac2
        self.mac1_span = mac1_span  # everything before mac1
        self.mac2_span = mac2_span  # everything before mac2


def init_head(sender: int, client_id: str) -> bytes:
    cid = client_id.encode("ascii")
    return bytes((MARK, T_INIT, 0, 0)) + _U32.pack(sender) + bytes((len(cid),)) + cid


def pack_init(head: bytes, noise_msg: bytes, mac1_k: bytes, cookie: bytes | None) -> bytes:
    body = head + noise_msg
    m1 = mac(mac1_k, body)
    m2 = mac(cookie, body + m1) if cookie else bytes(MACLEN)
    return body + m1 + m2


def parse_init(d) -> Init | None:
    d = bytes(d)
    if len(d) < INIT_MIN or d[1] != T_INIT:
        return None
    n = d[8]
    if n > MAX_ID or len(d) < INIT_MIN + n:
        return None
    cid = d[9:9 + n]
    if not ID_RE.match(cid):
        return None
    head = d[:9 + n]
    return Init(sender=_U32.unpack_from(d, 4)[0], client_id=cid.decode("ascii"),
                prologue=PROLOGUE_LABEL + head, noise=d[9 + n:-2 * MACLEN],
                mac1=d[-2 * MACLEN:-MACLEN], mac2=d[-MACLEN:],
                mac1_span=d[:-2 * MACLEN], mac2_span=d[:-MACLEN])


# --- RESP -----------------------------------------------------------------

class Resp:
    __slots__ = ("receiver", "noise", "mac1", "mac1_span")

    def __init__(self, receiver: int, noise: bytes, mac1: bytes, mac1_span: bytes):
        self.receiver = receiver
        self.noise = noise          # e || encrypted (sender index || payload): Noise message 2
        self.mac1 = mac1
        self.mac1_span = mac1_span


def pack_resp(receiver: int, noise_msg: bytes, mac1_k: bytes) -> bytes:
    body = bytes((MARK, T_RESP, 0, 0)) + _U32.pack(receiver) + noise_msg
    return body + mac(mac1_k, body)


def parse_resp(d) -> Resp | None:
    d = bytes(d)
    if len(d) < RESP_MIN or d[1] != T_RESP:
        return None
    return Resp(receiver=_U32.unpack_from(d, 4)[0], noise=d[8:-MACLEN],
                mac1=d[-MACLEN:], mac1_span=d[:-MACLEN])


# --- COOKIE ---------------------------------------------------------------

def pack_cookie(receiver: int, nonce: bytes, sealed: bytes) -> bytes:
    return bytes((MARK, T_COOKIE, 0, 0)) + _U32.pack(receiver) + nonce + sealed


def parse_cookie(d):
    """(receiver, nonce, sealed cookie) or None."""
    d = bytes(d)
    if len(d) != COOKIE_LEN or d[1] != T_COOKIE:
        return None
    return _U32.unpack_from(d, 4)[0], d[8:20], d[20:]


# --- DATA -----------------------------------------------------------------

def data_header(receiver: int, counter: int, flags: int = 0) -> bytes:
    return _DATA_HDR.pack(MARK, T_DATA, flags, 0, receiver, counter)


def parse_data_header(d):
    """(flags, receiver, counter) or None."""
    if len(d) < DATA_MIN or d[1] != T_DATA:
        return None
    _, _, flags, _, receiver, counter = _DATA_HDR.unpack_from(d, 0)
    return flags, receiver, counter


def pack_records(packets) -> bytes:
    """Inner packets as records: u16 length (big-endian), then the bytes."""
    out = bytearray()
    for p in packets:
        out += len(p).to_bytes(2, "big")
        out += p
    return bytes(out)


def parse_records(plain) -> list | None:
    """Split a DATA plaintext into packets. A zero length ends the list
    (what follows is padding). None if a record overruns the plaintext."""
    end = len(plain)
    if end >= 2 and ((plain[0] << 8) | plain[1]) == end - 2 and end > 2:
        return [plain[2:]]   # the common case: exactly one packet
    out: list = []
    mv = memoryview(plain)
    pos = 0
    while pos + 2 <= end:
        n = (mv[pos] << 8) | mv[pos + 1]
        if n == 0:
            return out
        pos += 2
        if pos + n > end:
            return None
        out.append(bytes(mv[pos:pos + n]))
        pos += n
    if pos != end:
        return None  # a stray byte: not something a camex peer sends
    return out


# --- BULK -------------------------------------------------------------------
#
# One AEAD over a whole frame (a TSO super-packet, usually), spread over up
# to 64 datagrams. Every fragment carries the same header except byte 3, the
# fragment index; the header with index 0 is the AEAD's associated data, so
# any fragment lets the receiver rebuild it (docs/PROTOCOL.md §4.7).

HEADER_BULK = 20
BULK_MAX_FRAGMENTS = 64
BULK_RECORD = 4       # u16 length | u16 gso_size before each packet
_BULK_HDR = struct.Struct("<BBBBIQBBH")


def bulk_max_plain(datagram_size: int) -> int:
    """The largest frame plaintext that fits 64 fragments of this size."""
    return BULK_MAX_FRAGMENTS * (datagram_size - HEADER_BULK) - TAGLEN


def bulk_one_send_packet(datagram_size: int) -> int:
    """The largest super-packet whose BULK frame (one record) goes out
    in ONE UDP GSO send of fragments of `datagram_size` bytes: at most
    65,507 bytes of them, the last one may be shorter. 64,587 bytes for
    1472-byte datagrams (44 full fragments and one of 739 bytes); a TSO
    super-packet of 64 KiB needs 45 full ones and a bit, 66,240 bytes or
    more: two sends, and two receives, every frame. A daemon caps its TUN's
    TSO size to bulk_tso_max()."""
    room = datagram_size - HEADER_BULK
    best = 0
    for n in range(1, BULK_MAX_FRAGMENTS + 1):   # n fragments, the last one shorter
        last = min(room, MAX_GSO_BYTES - (n - 1) * datagram_size - HEADER_BULK)
        if last <= 0:
            break
        best = (n - 1) * room + last
    return best - TAGLEN - BULK_RECORD


def bulk_tso_max(datagram_size: int) -> int:
    """The gso_max_size for a TUN whose super-packets become BULK frames
    of `datagram_size`-byte fragments: bulk_one_send_packet() less 120
    bytes, the largest IPv4 and TCP headers (an IPv6 one, 40 + 60, is
    smaller; the kernel's TCP sizes a
    super-packet's payload by this limit; its headers come on top on some
    kernels)."""
    return bulk_one_send_packet(datagram_size) - 120


_BULK_REC = struct.Struct("!HH")


def bulk_header(receiver: int, counter: int, count: int, flags: int = 0) -> bytes:
    """The header of a frame's fragments with index 0: also the AD."""
    return _BULK_HDR.pack(MARK, T_BULK, flags, 0, receiver, counter, count, 0, 0)


def bulk_fields(d):
    """The raw header fields (mark, type, flags, index, receiver, counter,
    count, reserved, reserved) of a datagram of at least 20 bytes: one C
    call, for the per-fragment fast path (callers check what they need)."""
    return _BULK_HDR.unpack_from(d, 0)


def parse_bulk(d):
    """(flags, index, receiver, counter, count, slice memoryview) of one BULK
    fragment, or None if malformed (short, count 0 or above 64, index not
    below count, a reserved byte set, not BULK)."""
    if len(d) <= HEADER_BULK or d[0] != MARK or d[1] != T_BULK:
        return None
    _, _, flags, index, receiver, counter, count, r1, r2 = _BULK_HDR.unpack_from(d, 0)
    if r1 or r2 or not 0 < count <= BULK_MAX_FRAGMENTS or index >= count:
        return None
    return flags, index, receiver, counter, count, memoryview(d)[HEADER_BULK:]


def pack_bulk_records(records) -> bytes:
    """[(gso_size, packet), ...] -> BULK plaintext: u16 length, u16 gso_size
    (big-endian), packet, for each."""
    parts = []
    for g, p in records:
        parts.append(_BULK_REC.pack(len(p), g))
        parts.append(p)
    return b"".join(parts)


def parse_bulk_records(plain) -> list | None:
    """BULK plaintext -> [(gso_size, packet memoryview), ...]. A zero length
    ends the list (the rest is padding); None if a record overruns."""
    mv = memoryview(plain)
    end = len(mv)
    out: list = []
    pos = 0
    while pos + BULK_RECORD <= end:
        n, g = _BULK_REC.unpack_from(mv, pos)
        if n == 0:
            return out
        pos += BULK_RECORD
        if pos + n > end:
            return None
        out.append((g, mv[pos:pos + n]))
        pos += n
    if pos != end:
        return None
    return out


# --- NOSESSION ------------------------------------------------------------

def pack_nosession(index: int) -> bytes:
    return bytes((MARK, T_NOSESSION, 0, 0)) + _U32.pack(index)


def parse_nosession(d):
    if len(d) != NOSESSION_LEN or d[1] != T_NOSESSION:
        return None
    return _U32.unpack_from(bytes(d), 4)[0]


# --- handshake payloads (inside the Noise AEAD) -----------------------------

TLV_MODE = 1        # u8: 0 manual, 1 auto                       (INIT)
TLV_LOCAL_CIDR = 2  # 4-byte address + u8 prefix length          (INIT manual, RESP)
TLV_GATEWAY = 3     # 4-byte address                             (RESP)
TLV_ROUTE = 4       # 4-byte network + u8 prefix, repeatable     (RESP)
TLV_MTU = 5         # u16 big-endian, 576..9000                  (INIT manual, RESP)
TLV_ERROR = 6       # u8 code + UTF-8 text: the server refuses   (RESP)
TLV_FEATURES = 7    # u8 bitmask of what the sender accepts      (INIT, RESP)
# Payload version 2: IPv6 inside the tunnel (docs/PROTOCOL.md §4.6). New
# types, so that a version-1 peer, which skips unknown types, reads the
# IPv4 part of a version-2 payload exactly as before.
TLV_VERSION = 8     # u8 payload version of the sender, 2        (INIT, RESP)
TLV_LOCAL_CIDR6 = 9  # 16-byte address + u8 prefix length        (INIT manual, RESP)
TLV_GATEWAY6 = 10   # 16-byte address                            (RESP)
TLV_ROUTE6 = 11     # 16-byte network + u8 prefix, repeatable     (RESP)

PAYLOAD_V1 = 1       # no TLV_VERSION: IPv4 inside only
PAYLOAD_VERSION = 2  # what this camex speaks

FEATURE_BULK = 0x01  # "I accept BULK messages"
# "My session keys may run AES-256-GCM" (the sender's CPU has AES
# instructions): a session uses it when INIT and RESP both carry the bit.
FEATURE_AES256GCM = 0x02
# The bits by name, in bit order (camex-dissect, the Scapy layer).
FEATURE_NAMES = {FEATURE_BULK: "BULK", FEATURE_AES256GCM: "AES256GCM"}

ERR_UNKNOWN_CLIENT = 1
ERR_ADDRESS = 2      # address not allowed for this ID, or held by another client
ERR_CONFIG = 3       # no usable profile for an auto client
ERR_REQUEST = 4      # malformed or unsupported request
MAX_ROUTES = 16


class Request(Value):
    """What a client asks for in its INIT. Compared by value (a re-sent
    request is the same request)."""
    __slots__ = ("auto", "local_cidr", "mtu", "features", "local_cidr6", "version")

    def __init__(self, auto: bool = False, local_cidr: ipaddress.IPv4Interface | None = None,
                 mtu: int | None = None, features: int = 0,
                 local_cidr6: ipaddress.IPv6Interface | None = None,
                 version: int = PAYLOAD_V1):
        self.auto = auto
        self.local_cidr = local_cidr
        self.mtu = mtu
        self.features = features    # FEATURE_* the client accepts (TLV_FEATURES)
        self.local_cidr6 = local_cidr6  # a manual client's IPv6 address (payload 2)
        self.version = version      # payload version (TLV_VERSION; 1 without it)



class Config(Value):
    """What the server grants, sent back in the RESP (auto-mode CONFIG).
    Compared by value: a client reconfigures only on a change, a reload
    keeps a session whose grant is unchanged."""
    __slots__ = ("local_cidr", "gateway_ip", "routes", "mtu", "features",
                 "local_cidr6", "gateway_ip6", "version")

    def __init__(self, local_cidr: ipaddress.IPv4Interface | None = None,
                 gateway_ip: ipaddress.IPv4Address | None = None, routes: list | None = None,
                 mtu: int | None = None, features: int = 0,
                 local_cidr6: ipaddress.IPv6Interface | None = None,
                 gateway_ip6: ipaddress.IPv6Address | None = None,
                 version: int = PAYLOAD_V1):
        self.local_cidr = local_cidr
        self.gateway_ip = gateway_ip
        self.routes = [] if routes is None else routes   # both families
        self.mtu = mtu
        self.features = features    # FEATURE_* the server accepts (TLV_FEATURES)
        self.local_cidr6 = local_cidr6
        self.gateway_ip6 = gateway_ip6
        self.version = version      # payload version (TLV_VERSION; 1 without it)



class Refusal(Value):
    __slots__ = ("code", "message")

    def __init__(self, code: int, message: str = ""):
        self.code = code
        self.message = message


def _tlv(t: int, v: bytes) -> bytes:
    return bytes((t, len(v))) + v


def _cidr(i) -> bytes:
    return i.ip.packed + bytes((i.network.prefixlen,))


def _version(v: int) -> bytes:
    # Version 1 is the absence of the item: a v1 payload keeps its bytes.
    return _tlv(TLV_VERSION, bytes((v,))) if v > PAYLOAD_V1 else b""


def encode_request(req: Request) -> bytes:
    out = _tlv(TLV_MODE, bytes((1 if req.auto else 0,)))
    if req.local_cidr is not None:
        out += _tlv(TLV_LOCAL_CIDR, _cidr(req.local_cidr))
    if req.mtu is not None:
        out += _tlv(TLV_MTU, req.mtu.to_bytes(2, "big"))
    if req.features:
        out += _tlv(TLV_FEATURES, bytes((req.features,)))
    out += _version(req.version)
    if req.local_cidr6 is not None and req.version > PAYLOAD_V1:
        out += _tlv(TLV_LOCAL_CIDR6, _cidr(req.local_cidr6))
    return out


def encode_config(cfg: Config | None, refusal: Refusal | None = None,
                  features: int = 0, version: int = PAYLOAD_V1) -> bytes:
    """The RESP payload: a refusal, or the granted config (None for a manual
    client without one) followed by the server's features (`features`, or
    cfg.features) and payload version (`version`, or cfg.version). The
    IPv6 items go only into a version-2 payload; IPv4 routes beyond 16 and
    IPv6 ones beyond 16 are cut."""
    if refusal is not None:
        return _tlv(TLV_ERROR, bytes((refusal.code,)) + refusal.message.encode()[:200])
    out = b""
    if cfg is not None:
        if cfg.local_cidr is not None:
            out += _tlv(TLV_LOCAL_CIDR, _cidr(cfg.local_cidr))
        if cfg.gateway_ip is not None:
            out += _tlv(TLV_GATEWAY, cfg.gateway_ip.packed)
        for r in [r for r in cfg.routes if r.version == 4][:MAX_ROUTES]:
            out += _tlv(TLV_ROUTE, r.network_address.packed + bytes((r.prefixlen,)))
        if cfg.mtu is not None:
            out += _tlv(TLV_MTU, cfg.mtu.to_bytes(2, "big"))
        features = features or cfg.features
        version = max(version, cfg.version)
    if features:
        out += _tlv(TLV_FEATURES, bytes((features,)))
    out += _version(version)
    if cfg is not None and version > PAYLOAD_V1:
        if cfg.local_cidr6 is not None:
            out += _tlv(TLV_LOCAL_CIDR6, _cidr(cfg.local_cidr6))
        if cfg.gateway_ip6 is not None:
            out += _tlv(TLV_GATEWAY6, cfg.gateway_ip6.packed)
        for r in [r for r in cfg.routes if r.version == 6][:MAX_ROUTES]:
            out += _tlv(TLV_ROUTE6, r.network_address.packed + bytes((r.prefixlen,)))
    return out


def _tlvs(data: bytes):
    pos = 0
    while pos + 2 <= len(data):
        t, n = data[pos], data[pos + 1]
        v = data[pos + 2:pos + 2 + n]
        if len(v) != n:
            raise ValueError("truncated TLV")
        yield t, v
        pos += 2 + n
    if pos != len(data):
        raise ValueError("stray byte after TLVs")


def _iface(v: bytes) -> ipaddress.IPv4Interface:
    if len(v) != 5 or v[4] > 32:
        raise ValueError("bad CIDR")
    return ipaddress.IPv4Interface((ipaddress.IPv4Address(v[:4]), v[4]))


def _iface6(v: bytes) -> ipaddress.IPv6Interface:
    if len(v) != 17 or v[16] > 128:
        raise ValueError("bad IPv6 CIDR")
    a = ipaddress.IPv6Address(v[:16])
    if a.ipv4_mapped is not None or a.is_link_local or a.is_multicast or int(a) >> 32 == 0:
        raise ValueError("not a tunnel IPv6 address")   # what camex's parsers refuse too
    return ipaddress.IPv6Interface((a, v[16]))


def _net6(v: bytes) -> ipaddress.IPv6Network:
    if len(v) != 17 or v[16] > 128:
        raise ValueError("bad IPv6 route")
    # Host bits are cleared, as for an IPv4 route (_iface(v).network).
    return ipaddress.IPv6Interface((ipaddress.IPv6Address(v[:16]), v[16])).network


def _mtu(v: bytes) -> int:
    m = int.from_bytes(v, "big")
    if len(v) != 2 or not 576 <= m <= 9000:
        raise ValueError("bad MTU")
    return m


def decode_request(data: bytes) -> Request | None:
    req = Request()
    try:
        for t, v in _tlvs(data):
            if t == TLV_MODE and len(v) == 1:
                req.auto = v[0] == 1
            elif t == TLV_LOCAL_CIDR:
                req.local_cidr = _iface(v)
            elif t == TLV_MTU:
                req.mtu = _mtu(v)
            elif t == TLV_FEATURES and len(v) >= 1:
                req.features = v[0]
            elif t == TLV_VERSION and len(v) >= 1:
                req.version = max(v[0], PAYLOAD_V1)
            elif t == TLV_LOCAL_CIDR6:
                req.local_cidr6 = _iface6(v)
    except ValueError:
        return None
    return req


def decode_config(data: bytes):
    """A Config, a Refusal, or None if malformed."""
    cfg = Config()
    try:
        for t, v in _tlvs(data):
            if t == TLV_ERROR and len(v) >= 1:
                return Refusal(v[0], v[1:].decode("utf-8", "replace"))
            if t == TLV_LOCAL_CIDR:
                cfg.local_cidr = _iface(v)
            elif t == TLV_GATEWAY and len(v) == 4:
                cfg.gateway_ip = ipaddress.IPv4Address(v)
            elif t == TLV_ROUTE:
                if sum(r.version == 4 for r in cfg.routes) < MAX_ROUTES:
                    cfg.routes.append(_iface(v).network)
            elif t == TLV_MTU:
                cfg.mtu = _mtu(v)
            elif t == TLV_FEATURES and len(v) >= 1:
                cfg.features = v[0]
            elif t == TLV_VERSION and len(v) >= 1:
                cfg.version = max(v[0], PAYLOAD_V1)
            elif t == TLV_LOCAL_CIDR6:
                cfg.local_cidr6 = _iface6(v)
            elif t == TLV_GATEWAY6:
                if len(v) != 16:
                    raise ValueError("bad IPv6 gateway")
                cfg.gateway_ip6 = ipaddress.IPv6Address(v)
            elif t == TLV_ROUTE6:
                if sum(r.version == 6 for r in cfg.routes) < MAX_ROUTES:
                    cfg.routes.append(_net6(v))
    except ValueError:
        return None
    return cfg
