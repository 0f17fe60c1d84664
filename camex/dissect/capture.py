"""Reading UDP datagrams out of pcap / pcapng captures, with IP reassembly.

Pure Python (no Scapy): camex-dissect and the tests use it to find every UDP
datagram of a capture, whatever the link type, and to put fragmented IPv4
and IPv6 datagrams back together (the legacy C peer lets full-size
encrypted packets be fragmented, flaw 7 in docs/LEGACY.md; over IPv6 the
sending host fragments what exceeds the path MTU, with a Fragment header).
IPv6 extension headers (hop-by-hop, routing, destination options) before
UDP or the Fragment header are skipped.

Supported: pcap (micro- and nanosecond, either byte order), pcapng (several
interfaces with their own link types and timestamp resolutions), link types
Ethernet (with VLAN tags), Linux cooked v1 and v2, raw IP, IPv4, IPv6, BSD
loopback. Datagrams come out in capture order: a fragmented datagram takes
the place of its first-seen fragment; one whose fragments never all arrive
is still reported (complete=False) once it expires or the capture ends.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO
from collections.abc import Iterator

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
RAW_ALIASES = (12, 14)  # DLT_RAW on some BSDs, as written by old libpcaps
LINKTYPE_NAMES = {0: "null", 1: "ethernet", 101: "raw", 12: "raw", 14: "raw",
                  108: "loop", 113: "linux-sll", 228: "ipv4", 229: "ipv6",
                  276: "linux-sll2"}

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)

FRAG_TIMEOUT = 30.0   # seconds of capture time a fragment set may stay open
MAX_PENDING = 256     # open fragment sets before the oldest is given up
MAX_IP_LEN = 65535

PCAPNG_SHB = 0x0A0D0D0A


class CaptureError(Exception):
    """The file is not a capture this module can read (one-line message)."""


@dataclass
class Frame:
    index: int          # 1-based frame number, as Wireshark counts
    time: float
    linktype: int
    data: bytes
    wirelen: int


@dataclass
class Datagram:
    """One UDP datagram (after reassembly)."""

    index: int          # frame number of its first-seen fragment
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes      # UDP payload (what was captured of it)
    udp_length: int     # payload length the UDP header declares
    complete: bool = True
    fragments: int = 1  # IP fragments it was made of (1: not fragmented)
    why_incomplete: str = ""
    # (segment, segments, segment size) when cut out of a UDP GSO
    # super-datagram (camex.dissect.v2.gso_split); None otherwise
    gso: tuple | None = None

    @property
    def missing(self) -> int:
        return max(0, self.udp_length - len(self.payload))


@dataclass
class Stats:
    frames: int = 0
    ip_packets: int = 0
    not_ip: int = 0
    unsupported_linktype: int = 0
    udp: int = 0
    fragments: int = 0
    reassembled: int = 0
    incomplete: int = 0
    orphan_fragments: int = 0
    malformed: int = 0
    linktypes: set = field(default_factory=set)


def endpoint(addr: str, port: int) -> str:
    """`192.0.2.1:7000`, or `[2001:db8::1]:7000` for an IPv6 address."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# ------------------------------------------------------------ file formats


def _open(src) -> BinaryIO:
    if hasattr(src, "read"):
        return src
    try:
        return open(src, "rb")
    except OSError as exc:
        raise CaptureError(f"{src}: {exc.strerror or exc}") from None


def read_frames(src) -> Iterator[Frame]:
    """Frames of a pcap or pcapng file (path or binary file object)."""
    name = getattr(src, "name", src)
    fh = _open(src)
    try:
        head = fh.read(4)
        if len(head) < 4:
            raise CaptureError(f"{name}: not a pcap or pcapng capture (file is {len(head)} bytes)")
        if head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            yield from _read_pcap(fh, head, name)
        elif struct.unpack("<I", head)[0] == PCAPNG_SHB:
            yield from _read_pcapng(fh, head, name)
        else:
            raise CaptureError(f"{name}: not a pcap or pcapng capture (starts with {head.hex()})")
    finally:
        if fh is not src:
            fh.close()


def _read_pcap(fh, magic, name) -> Iterator[Frame]:
    endian = "<" if magic[0] in (0xD4, 0x4D) else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rest = fh.read(20)
    if len(rest) < 20:
        raise CaptureError(f"{name}: truncated pcap file header")
    _vmaj, _vmin, _zone, _sig, _snap, network = struct.unpack(endian + "HHiIII", rest)
    linktype = network & 0xFFFF  # upper bits may carry FCS information
    div = 1e9 if nano else 1e6
    rec = struct.Struct(endian + "IIII")
    index = 0
    offset = 24
    while True:
        hdr = fh.read(16)
        if not hdr:
            return
        if len(hdr) < 16:
            raise CaptureError(f"{name}: truncated record header at byte {offset}")
        sec, frac, caplen, wirelen = rec.unpack(hdr)
        if caplen > 0x4000000:  # 64 MiB: no real frame is that large
            raise CaptureError(f"{name}: corrupt record at byte {offset} (length {caplen})")
        data = fh.read(caplen)
        if len(data) < caplen:
            raise CaptureError(f"{name}: truncated record at byte {offset}")
        index += 1
        offset += 16 + caplen
        yield Frame(index, sec + frac / div, linktype, data, wirelen)


def _tsresol(v: int) -> float:
    return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v


def _read_pcapng(fh, head, name) -> Iterator[Frame]:
    endian = "<"
    interfaces: list[tuple[int, float, int]] = []  # (linktype, unit, offset s)
    index = 0
    offset = 0
    block_type_raw = head
    while True:
        if block_type_raw is None:
            block_type_raw = fh.read(4)
            if not block_type_raw:
                return
            if len(block_type_raw) < 4:
                raise CaptureError(f"{name}: truncated block at byte {offset}")
        if struct.unpack("<I", block_type_raw)[0] == PCAPNG_SHB:
            # New section: byte order from its magic, interfaces start over.
            lenraw = fh.read(4)
            bom = fh.read(4)
            if len(bom) < 4 or len(lenraw) < 4:
                raise CaptureError(f"{name}: truncated section header at byte {offset}")
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise CaptureError(f"{name}: bad pcapng byte-order magic at byte {offset}")
            blen = struct.unpack(endian + "I", lenraw)[0]
            if blen < 28 or blen % 4:
                raise CaptureError(f"{name}: bad section header length {blen} at byte {offset}")
            body = fh.read(blen - 12)
            if len(body) < blen - 12:
                raise CaptureError(f"{name}: truncated section header at byte {offset}")
            interfaces = []
            offset += blen
            block_type_raw = None
            continue
        btype = struct.unpack(endian + "I", block_type_raw)[0]
        lenraw = fh.read(4)
        if len(lenraw) < 4:
            raise CaptureError(f"{name}: truncated block at byte {offset}")
        blen = struct.unpack(endian + "I", lenraw)[0]
        if blen < 12 or blen % 4 or blen > 0x4000000:
            raise CaptureError(f"{name}: bad block length {blen} at byte {offset}")
        body = fh.read(blen - 8)
        if len(body) < blen - 8:
            raise CaptureError(f"{name}: truncated block at byte {offset}")
        body = body[:-4]  # trailing copy of the block length
        block_type_raw = None
        offset += blen
        if btype == 1:  # interface description
            if len(body) < 8:
                raise CaptureError(f"{name}: short interface block at byte {offset - blen}")
            linktype = struct.unpack_from(endian + "H", body)[0]
            unit, tsoff = 1e-6, 0
            for code, val in _options(body[8:], endian):
                if code == 9 and val:
                    unit = _tsresol(val[0])
                elif code == 14 and len(val) >= 8:
                    tsoff = struct.unpack(endian + "q", val[:8])[0]
            interfaces.append((linktype, unit, tsoff))
        elif btype in (6, 2):  # enhanced packet / obsolete packet
            if len(body) < 20:
                raise CaptureError(f"{name}: short packet block at byte {offset - blen}")
            if btype == 6:
                ifid, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
            else:
                ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(endian + "HHIIII", body)
            if ifid >= len(interfaces):
                raise CaptureError(f"{name}: packet for undeclared interface {ifid}")
            linktype, unit, tsoff = interfaces[ifid]
            data = body[20:20 + caplen]
            index += 1
            yield Frame(index, tsoff + ((hi << 32) | lo) * unit, linktype, data, wirelen)
        elif btype == 3:  # simple packet: interface 0, no timestamp
            if not interfaces or len(body) < 4:
                raise CaptureError(f"{name}: simple packet block without interface")
            wirelen = struct.unpack_from(endian + "I", body)[0]
            index += 1
            yield Frame(index, 0.0, interfaces[0][0], body[4:4 + wirelen], wirelen)
        # other blocks (name resolution, statistics, custom...) are skipped


def _options(buf: bytes, endian: str):
    pos = 0
    while pos + 4 <= len(buf):
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        if code == 0:
            return
        yield code, buf[pos + 4:pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)


# ------------------------------------------------------------ link layers


def network_layer(linktype: int, data: bytes) -> bytes | None:
    """The IP packet inside a frame, or None (not IP / unknown link type)."""
    if linktype == LINKTYPE_ETHERNET:
        pos, etype = 12, None
        while pos + 2 <= len(data):
            etype = int.from_bytes(data[pos:pos + 2], "big")
            if etype in VLAN_TYPES:
                pos += 4
                continue
            break
        return data[pos + 2:] if etype in (ETH_IPV4, ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        return data[16:] if int.from_bytes(data[14:16], "big") in (ETH_IPV4, ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        return data[20:] if int.from_bytes(data[0:2], "big") in (ETH_IPV4, ETH_IPV6) else None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) or linktype in RAW_ALIASES:
        return data
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None
        fam_le, fam_be = struct.unpack("<I", data[:4])[0], struct.unpack(">I", data[:4])[0]
        fam = fam_be if linktype == LINKTYPE_LOOP else (fam_le if fam_le < 256 else fam_be)
        return data[4:] if fam in (2, 24, 28, 30) else None
    return None


def supported_linktype(linktype: int) -> bool:
    return linktype in LINKTYPE_NAMES


# ------------------------------------------------------------ IP and UDP


@dataclass
class _FragSet:
    key: tuple
    index: int
    time: float
    slot: list
    parts: dict = field(default_factory=dict)  # offset -> bytes
    total: int | None = None                   # payload length, once the last fragment is seen
    count: int = 0
    src: str = ""
    dst: str = ""
    # IPv6: the next header the Fragment header names (what the reassembled
    # payload starts with); IPv4 reassembles UDP only, so 17.
    next_header: int = 17


# IPv6 extension headers skipped on the way to UDP: hop-by-hop options,
# routing, destination options (RFC 8200 4.1). The Fragment header (44) is
# handled by reassembly; anything else (ESP, AH, no next header) ends the walk.
IPV6_EXT = (0, 43, 60)
IPV6_FRAGMENT = 44


def _skip_ext(buf, nh: int, pos: int):
    """(next header, offset) after the skippable extension headers of
    `buf` from `pos`; (None, pos) when one runs past the end."""
    while nh in IPV6_EXT:
        if pos + 2 > len(buf):
            return None, pos
        nh, pos = buf[pos], pos + (buf[pos + 1] + 1) * 8
    if pos > len(buf):
        return None, pos
    return nh, pos


def _udp_from(index, time, src, dst, l4: bytes, complete: bool, fragments: int = 1):
    """Datagram from an IP payload holding UDP (None if no UDP header at all)."""
    if len(l4) < 8:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", l4)
    declared = max(0, ulen - 8)
    body = l4[8:]
    if ulen >= 8 and len(body) >= declared:
        body = body[:declared]  # drop link-layer padding
    elif complete:
        complete = False  # header claims more than there is
    why = "" if complete else "cut short by the capture (snapshot length)"
    return Datagram(index, time, src, sport, dst, dport, bytes(body), declared, complete,
                    fragments, why)


class Reassembler:
    """Turns IP packets into UDP Datagrams, in capture order, IPv4 and IPv6
    fragments reassembled."""

    def __init__(self, stats: Stats | None = None, timeout: float = FRAG_TIMEOUT,
                 max_pending: int = MAX_PENDING):
        self.stats = stats or Stats()
        self.timeout = timeout
        self.max_pending = max_pending
        self.pending: dict[tuple, _FragSet] = {}
        self.queue: deque = deque()  # slots: [Datagram | None | False]; False = nothing

    def feed(self, index: int, time: float, ip: bytes) -> Iterator[Datagram]:
        """Give one IP packet; yields the datagrams that are ready in order."""
        self._expire(time)
        if not ip:
            self.stats.not_ip += 1
        elif ip[0] >> 4 == 4:
            self._ipv4(index, time, ip)
        elif ip[0] >> 4 == 6:
            self._ipv6(index, time, ip)
        else:
            self.stats.not_ip += 1
        yield from self._flush()

    def finish(self) -> Iterator[Datagram]:
        for fs in list(self.pending.values()):
            self._give_up(fs)
        yield from self._flush()

    # -- internals

    def _flush(self):
        q = self.queue
        while q and q[0][0] is not None:
            item = q.popleft()[0]
            if item is not False:
                yield item

    def _ready(self, dgram):
        if dgram is None:
            self.queue.append([False])
        else:
            self.stats.udp += 1
            self.queue.append([dgram])

    def _ipv4(self, index, time, ip):
        if len(ip) < 20:
            self.stats.malformed += 1
            return
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if ihl < 20 or total < ihl or len(ip) < ihl:
            self.stats.malformed += 1
            return
        self.stats.ip_packets += 1
        if ip[9] != 17:
            return
        truncated = len(ip) < total
        payload = ip[ihl:total]
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        fl = int.from_bytes(ip[6:8], "big")
        more, off = bool(fl & 0x2000), (fl & 0x1FFF) * 8
        if not more and off == 0:
            self._ready(_udp_from(index, time, src, dst, payload, not truncated))
            return
        self._fragment(index, time, (ip[12:16], ip[16:20], ip[4:6]), src, dst, off, more,
                       payload, off + (total - ihl), 17)

    def _fragment(self, index, time, key, src, dst, off, more, payload, end, next_header):
        """One IP fragment of a datagram: `payload` at offset `off`; `end`
        (the offset its header's length says it ends at, whatever was
        captured) is the whole payload's length when this is the last one."""
        self.stats.fragments += 1
        fs = self.pending.get(key)
        if fs is None:
            if len(self.pending) >= self.max_pending:
                oldest = min(self.pending.values(), key=lambda f: f.time)
                self._give_up(oldest)
            slot = [None]
            self.queue.append(slot)
            fs = _FragSet(key, index, time, slot, src=src, dst=dst, next_header=next_header)
            self.pending[key] = fs
        if off + len(payload) > MAX_IP_LEN:
            self.stats.malformed += 1
            return
        fs.count += 1
        fs.parts.setdefault(off, payload)
        if off == 0:
            fs.index, fs.time = index, time
            fs.next_header = next_header
        if not more:
            fs.total = end
        self._try_complete(fs)

    def _contiguous(self, fs) -> bytes:
        out = bytearray()
        for off in sorted(fs.parts):
            if off > len(out):
                break
            part = fs.parts[off]
            out += part[len(out) - off:]
        return bytes(out)

    def _try_complete(self, fs):
        if fs.total is None or 0 not in fs.parts:
            return
        data = self._contiguous(fs)
        if len(data) < fs.total:
            return
        del self.pending[fs.key]
        self.stats.reassembled += 1
        fs.slot[0] = _udp_from(fs.index, fs.time, fs.src, fs.dst, self._l4(fs, data[:fs.total]),
                               True, fs.count) or False
        if fs.slot[0] is not False:
            self.stats.udp += 1

    def _give_up(self, fs):
        self.pending.pop(fs.key, None)
        if 0 in fs.parts:
            self.stats.incomplete += 1
            dg = _udp_from(fs.index, fs.time, fs.src, fs.dst, self._l4(fs, self._contiguous(fs)),
                           False, fs.count)
            if dg is not None:
                dg.complete = False
                dg.why_incomplete = "IP fragments missing from the capture"
                self.stats.udp += 1
            fs.slot[0] = dg or False
        else:
            self.stats.orphan_fragments += fs.count
            fs.slot[0] = False

    def _expire(self, now):
        if not self.pending:
            return
        for fs in [f for f in self.pending.values() if now - f.time > self.timeout]:
            self._give_up(fs)

    @staticmethod
    def _l4(fs, data: bytes) -> bytes:
        """The UDP part of a reassembled payload: all of it, or (IPv6) what
        follows the extension headers the Fragment header announced; b""
        if that is not UDP."""
        if fs.next_header == 17:
            return data
        nh, pos = _skip_ext(data, fs.next_header, 0)
        return data[pos:] if nh == 17 else b""

    def _ipv6(self, index, time, ip):
        if len(ip) < 40:
            self.stats.malformed += 1
            return
        self.stats.ip_packets += 1
        plen = int.from_bytes(ip[4:6], "big")
        end = 40 + plen if plen else len(ip)  # 0: a jumbogram, taken as captured
        nh, pos = _skip_ext(ip, ip[6], 40)
        if nh is None or pos > end:
            self.stats.malformed += 1
            return
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        truncated = len(ip) < end
        if nh == 17:
            self._ready(_udp_from(index, time, src, dst, ip[pos:end], not truncated))
            return
        if nh != IPV6_FRAGMENT or pos + 8 > len(ip):
            return
        # Fragment header: next header, reserved, offset (13 bits) | M, id.
        inner_nh = ip[pos]
        offm = int.from_bytes(ip[pos + 2:pos + 4], "big")
        off, more = offm & 0xFFF8, bool(offm & 1)
        if inner_nh != 17 and inner_nh not in IPV6_EXT:
            return  # not UDP (the first fragment's next header says the same)
        payload = ip[pos + 8:end]
        if not more and off == 0:  # an atomic fragment (RFC 6946)
            self._ready(_udp_from(index, time, src, dst, self._l4(
                _FragSet((), 0, 0.0, [], next_header=inner_nh), payload), not truncated))
            return
        self._fragment(index, time, (ip[8:24], ip[24:40], ip[pos + 4:pos + 8]), src, dst,
                       off, more, payload, off + (end - pos - 8), inner_nh)


def datagrams(src, stats: Stats | None = None) -> Iterator[Datagram]:
    """Every UDP datagram of a capture file, reassembled, in capture order."""
    stats = stats if stats is not None else Stats()
    re = Reassembler(stats)
    for frame in read_frames(src):
        stats.frames += 1
        stats.linktypes.add(frame.linktype)
        if not supported_linktype(frame.linktype):
            stats.unsupported_linktype += 1
            continue
        ip = network_layer(frame.linktype, frame.data)
        if ip is None:
            stats.not_ip += 1
            continue
        yield from re.feed(frame.index, frame.time, ip)
    yield from re.finish()


# ------------------------------------------------------------ writing


class PcapWriter:
    """Minimal pcap writer (microseconds, little endian), e.g. LINKTYPE_RAW."""

    def __init__(self, path, linktype: int = LINKTYPE_RAW, snaplen: int = 262144):
        try:
            self.fh = open(path, "wb")
        except OSError as exc:
            raise CaptureError(f"{path}: {exc.strerror or exc}") from None
        self.fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    def write(self, time: float, data: bytes, wirelen: int | None = None) -> None:
        # pcap holds 32-bit seconds; pcapng input can have any 64-bit time
        if not 0 <= time < 2**32 - 1:
            time = 0.0
        sec = int(time)
        usec = int(round((time - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        self.fh.write(struct.pack("<IIII", sec, usec, len(data),
                                  max(len(data), wirelen or 0)) + data)
        self.count += 1

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
