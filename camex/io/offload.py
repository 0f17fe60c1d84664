"""TUN segmentation offloads: big reads, merged writes, Internet checksums.

A TUN opened with IFF_VNET_HDR puts a virtio_net_hdr before every packet,
which lets us hand the kernel one GSO "super-packet" per write: a train of
in-order TCP segments of one flow (or small datagrams of one UDP flow)
merged as the kernel's GRO would (`coalesce`), so its TCP sees one skb
instead of ~45. With TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 [| USO]) the
kernel also READS up to 64 KiB of one flow at once, checksum left to us;
`segment` cuts such a super-packet into MSS-sized packets with correct
checksums, as tcp_gso_segment would. For the legacy framing (one packet per
datagram) that costs more in Python than the kernel's own segmentation, so
TSO is off unless asked for (`set_tso`, for framings that carry
super-packets whole: docs/FASTPATH.md).

Checksums are computed with int.from_bytes(): 2**16 = 1 (mod 0xFFFF), so a
byte string read as one big-endian number is congruent, mod 0xFFFF, to the
sum of its 16-bit words, which is its ones'-complement sum up to the
0 / 0xFFFF ambiguity (a ones'-complement sum of nonzero data is never 0,
so a residue of 0 means 0xFFFF). One C call per packet.

`open_tun` tries the vnet header and falls back to the plain device; both
kinds of device offer read_packets()/read_items()/write_batch(), so the
daemons do not care which one they got.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import struct

from ..contract import SuperPacket
from . import gso
from .tun import IFF_NO_PI, IFF_TUN, TUN_PATH, TUNSETIFF, TunDevice
from .tun import open_tun as open_plain_tun

TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40  # the kernel wants USO4 and USO6 together

PROTO_TCP = 6
PROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)

READ_SIZE = gso.VNET_HDR_LEN + 65535 + 1
MAX_COALESCED = 65535  # IPv4 total length of a coalesced write
MAX_COALESCE_SEGS = 64
MAX_UDP_MERGE = 256  # largest datagram merged into a USO write (see _udp_train)

_IP_ID = struct.Struct("!H")


# --------------------------------------------------------------- checksums


def sum16(data) -> int:
    """The 16-bit word sum of `data`, mod 0xFFFF (a residue, see above).

    Odd lengths are padded with a zero byte at the end, as RFC 1071 says."""
    x = int.from_bytes(data, "big")
    if len(data) & 1:
        x <<= 8
    return x % 0xFFFF


def fold(residue: int) -> int:
    """The Internet checksum (complemented) for a residue of nonzero data."""
    return 0xFFFF - (residue % 0xFFFF) if residue % 0xFFFF else 0


def ip_checksum(header) -> int:
    """IPv4 header checksum of `header` (its checksum field must be 0)."""
    return fold(sum16(header))


def pseudo4(packet, proto: int, l4len: int) -> int:
    """Residue of the IPv4 pseudo-header of `packet` for an L4 length."""
    return int.from_bytes(packet[12:20], "big") + proto + l4len


def l4_checksum(packet, ihl: int, proto: int) -> int:
    """TCP/UDP checksum of an IPv4 packet (its checksum field must be 0).
    UDP's 0 is sent as 0xFFFF (0 means "no checksum")."""
    c = fold(pseudo4(packet, proto, len(packet) - ihl) + sum16(packet[ihl:]))
    if c == 0 and proto == PROTO_UDP:
        return 0xFFFF
    return c


def l4_valid(packet, ihl: int, proto: int) -> bool:
    """True if the TCP/UDP checksum of an IPv4 packet verifies."""
    if proto == PROTO_UDP and packet[ihl + 6] == 0 and packet[ihl + 7] == 0:
        return True  # no checksum
    return (pseudo4(packet, proto, len(packet) - ihl) + sum16(packet[ihl:])) % 0xFFFF == 0


def complete_csum(packet, start: int, offset: int) -> bytearray:
    """Finish a NEEDS_CSUM packet: the field at start+offset holds the
    pseudo-header sum; the checksum covers start..end including it."""
    b = bytearray(packet)
    at = start + offset
    c = fold(sum16(memoryview(b)[start:]))
    if c == 0 and offset == 6:  # UDP
        c = 0xFFFF
    b[at] = c >> 8
    b[at + 1] = c & 0xFF
    return b


# ------------------------------------------------------------ segmentation


class OffloadError(ValueError):
    """A super-packet we cannot cut (not IPv4 TCP/UDP, inconsistent)."""


def segment(hdr: gso.VnetHdr, packet) -> list:
    """Complete packets (checksums done) from one TUN read.

    `hdr` is the parsed virtio_net_hdr, `packet` the bytes after it.
    Raises OffloadError for what cannot be cut (the caller drops it)."""
    gtype = hdr[1] & ~gso.GSO_ECN
    if gtype == gso.GSO_NONE:
        if hdr[0] & gso.F_NEEDS_CSUM:
            if hdr[4] + hdr[5] + 2 > len(packet):
                raise OffloadError("checksum offset beyond the packet")
            return [complete_csum(packet, hdr[4], hdr[5])]
        return [packet]
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise OffloadError("GSO packet is not IPv4")
    if gtype == gso.GSO_TCPV4:
        return segment_tcp4(packet, hdr[3])
    if gtype == gso.GSO_UDP_L4:
        return segment_udp4(packet, hdr[3])
    raise OffloadError(f"GSO type {hdr[1]} not supported")


def _headers(packet, proto: int):
    ihl = (packet[0] & 15) * 4
    total = (packet[2] << 8) | packet[3]
    if ihl < 20 or packet[9] != proto or total > len(packet) or total <= ihl:
        raise OffloadError("bad IPv4 header in a GSO packet")
    return ihl, total


def segment_tcp4(packet, mss: int) -> list:
    """Cut an IPv4/TCP super-packet into segments of `mss` payload bytes,
    as the kernel's tcp_gso_segment would: sequence numbers advance, IP IDs
    count up, CWR only on the first segment, FIN/PSH only on the last."""
    ihl, total = _headers(packet, PROTO_TCP)
    if total < ihl + 20:
        raise OffloadError("truncated TCP header")
    thl = (packet[ihl + 12] >> 4) * 4
    hl = ihl + thl
    if thl < 20 or hl > total or mss <= 0:
        raise OffloadError("bad TCP header or MSS in a GSO packet")
    if total - hl <= mss:
        b = bytearray(packet[:total])
        b[ihl + 16] = b[ihl + 17] = 0
        c = l4_checksum(b, ihl, PROTO_TCP)
        b[ihl + 16], b[ihl + 17] = c >> 8, c & 0xFF
        return [b]
    mv = memoryview(packet)
    iph = bytearray(mv[:ihl])
    iph[10] = iph[11] = 0
    tcph = bytearray(mv[ihl:hl])
    tcph[16] = tcph[17] = 0
    ip_id = (iph[4] << 8) | iph[5]
    seq0 = int.from_bytes(tcph[4:8], "big")
    flags = tcph[13]
    pseudo = int.from_bytes(mv[12:20], "big") + PROTO_TCP
    out = []
    last_off = total - ((total - hl - 1) % mss + 1)
    i = 0
    for off in range(hl, total, mss):
        end = off + mss if off + mss < total else total
        plen = end - off
        iph[2:4] = _IP_ID.pack(hl + plen)
        iph[4:6] = _IP_ID.pack((ip_id + i) & 0xFFFF)
        iph[10] = iph[11] = 0
        c = fold(sum16(iph))
        iph[10], iph[11] = c >> 8, c & 0xFF
        tcph[4:8] = ((seq0 + off - hl) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if i:
            f &= ~TCP_CWR
        if off != last_off:
            f &= ~(TCP_FIN | TCP_PSH)
        tcph[13] = f
        seg = iph + tcph
        seg += mv[off:end]
        s = memoryview(seg)[ihl:]
        c = fold(pseudo + thl + plen + sum16(s))
        seg[ihl + 16], seg[ihl + 17] = c >> 8, c & 0xFF
        out.append(seg)
        i += 1
    return out


def segment_udp4(packet, size: int) -> list:
    """Cut an IPv4/UDP super-packet (USO) into datagrams of `size` payload
    bytes, each with its own UDP header and checksum."""
    ihl, total = _headers(packet, PROTO_UDP)
    hl = ihl + 8
    if hl > total or size <= 0:
        raise OffloadError("bad UDP GSO packet")
    mv = memoryview(packet)
    iph = bytearray(mv[:ihl])
    udph = bytearray(mv[ihl:hl])
    ip_id = (iph[4] << 8) | iph[5]
    pseudo = int.from_bytes(mv[12:20], "big") + PROTO_UDP
    out = []
    i = 0
    for off in range(hl, total, size):
        end = min(off + size, total)
        plen = end - off
        iph[2:4] = _IP_ID.pack(hl + plen)
        iph[4:6] = _IP_ID.pack((ip_id + i) & 0xFFFF)
        iph[10] = iph[11] = 0
        c = fold(sum16(iph))
        iph[10], iph[11] = c >> 8, c & 0xFF
        udph[4:6] = _IP_ID.pack(8 + plen)
        udph[6] = udph[7] = 0
        seg = iph + udph
        seg += mv[off:end]
        c = fold(pseudo + 8 + plen + sum16(memoryview(seg)[ihl:])) or 0xFFFF
        seg[ihl + 6], seg[ihl + 7] = c >> 8, c & 0xFF
        out.append(seg)
        i += 1
    return out


# ------------------------------------------------------------- coalescing


def _tcp_info(p):
    """(flow key, seq, payload offset, payload length, flags) of a plain
    IPv4/TCP packet that may be coalesced, else None."""
    n = len(p)
    if n < 40 or p[0] != 0x45 or p[9] != PROTO_TCP:
        return None
    if (p[2] << 8 | p[3]) != n or p[6] & 0x3F or p[7]:  # fragments, MF
        return None
    thl = (p[32] >> 4) * 4
    flags = p[33]
    if thl < 20 or 20 + thl > n or flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG) \
            or not flags & TCP_ACK:
        return None
    return thl, flags


_MASKS: dict = {}


def _masks(hl: int):
    """For a header of `hl` bytes (IPv4 without options + TCP): the mask of
    the bytes two segments of one train share (version/IHL/TOS, DF/TTL/
    protocol, addresses, ports, ack, data offset, window, urgent pointer,
    options; not length, IP ID, checksums, sequence or flags), and the bit
    shifts of the total length, sequence number and flags."""
    m = _MASKS.get(hl)
    if m is None:
        keep = bytearray(b"\xff" * hl)
        for lo, hi in ((2, 6), (10, 12), (24, 28), (33, 34), (36, 38)):
            keep[lo:hi] = bytes(hi - lo)
        shift = lambda end: (hl - end) * 8  # noqa: E731 (bit offset of a field ending at `end`)
        m = _MASKS[hl] = (int.from_bytes(keep, "big"), (shift(4), shift(28), shift(34)))
    return m


def _udp_train(packets, i: int):
    """Merge small same-flow UDP datagrams from packets[i] into one USO
    write (yielded); returns the index after the train, or i if none.

    USO writes need NEEDS_CSUM (the kernel's UDP segmentation takes nothing
    else), so the kernel would not check the datagrams' own checksums: they
    are checked here first, which is cheap for small datagrams (hence
    MAX_UDP_MERGE); a datagram that fails ends the train and is written
    alone for the kernel to drop."""
    p = packets[i]
    n = len(packets)
    size = len(p)
    if size < 29 or p[0] != 0x45 or p[6] & 0x3F or p[7] or \
            (p[2] << 8 | p[3]) != size or (p[24] << 8 | p[25]) != size - 20 \
            or not l4_valid(p, 20, PROTO_UDP):
        return i
    key = bytes(p[0:2]) + bytes(p[6:10]) + bytes(p[12:24])
    parts = [p[28:]]
    total = size
    j = i + 1
    while j < n and j - i < MAX_COALESCE_SEGS:
        q = packets[j]
        ql = len(q)
        if ql > size or ql < 29 or total + ql - 28 > MAX_COALESCED or q[9] != PROTO_UDP:
            break
        if bytes(q[0:2]) + bytes(q[6:10]) + bytes(q[12:24]) != key \
                or (q[2] << 8 | q[3]) != ql or (q[24] << 8 | q[25]) != ql - 20 \
                or not l4_valid(q, 20, PROTO_UDP):
            break
        parts.append(q[28:])
        total += ql - 28
        j += 1
        if ql < size:
            break
    if j - i < 2:
        return i
    hdr = bytearray(p[:28])
    hdr[2:4] = _IP_ID.pack(total)
    hdr[10] = hdr[11] = 0
    c = ip_checksum(hdr[:20])
    hdr[10], hdr[11] = c >> 8, c & 0xFF
    hdr[24:26] = _IP_ID.pack(total - 20)
    # NEEDS_CSUM: the field holds the folded pseudo-header sum.
    ps = pseudo4(hdr, PROTO_UDP, total - 20) % 0xFFFF or 0xFFFF
    hdr[26], hdr[27] = ps >> 8, ps & 0xFF
    yield gso.pack_vnet(gso.F_NEEDS_CSUM, gso.GSO_UDP_L4, 28, size - 28, 20, 6), [hdr] + parts
    return j


def coalesce(packets, udp: bool = True):
    """Group complete IPv4 packets for TUN writes, order kept.

    Yields (vnet header bytes, [buffers]) per write. A run of in-order TCP
    segments of one flow (same addresses, ports, ack, window, options and
    TOS/TTL/DF; equal payload sizes except a shorter last one; PSH only on
    the last) becomes one GSO_TCPV4 write, the way the kernel's GRO hands a
    train to TCP. Its TCP checksum is the full checksum of the merged
    packet, computed from the segments' own checksums (no payload bytes are
    read): a valid segment satisfies pseudo + header (checksum field
    included) + payload = 0 (mod 0xFFFF), so its payload's sum follows from
    its header. If a field lies, the merged checksum is wrong too, and the
    kernel, which is given no "checksum valid" flag, drops the merged packet
    as it would have dropped the bad segment. Anything else is written
    alone, unchanged.
    """
    i, n = 0, len(packets)
    plain = gso.PLAIN_VNET_HDR
    while i < n:
        p = packets[i]
        info = _tcp_info(p) if i + 1 < n else None
        if info is None:
            if udp and i + 1 < n and len(p) <= MAX_UDP_MERGE and p[9] == PROTO_UDP:
                j = yield from _udp_train(packets, i)
                if j > i:
                    i = j
                    continue
            yield plain, [p]
            i += 1
            continue
        thl, flags = info
        hl = 20 + thl
        mss = len(p) - hl
        if mss <= 0 or flags & TCP_PSH:
            yield plain, [p]
            i += 1
            continue
        # The whole header as one integer: what must be equal is compared
        # under a mask, the rest (length, seq, flags, checksum) is read
        # from it with shifts. One C call per segment.
        mask, sh = _masks(hl)
        hp = int.from_bytes(p[:hl], "big")
        tmpl = hp & mask
        tcp_bits = (1 << (thl * 8)) - 1
        addrs = int.from_bytes(p[12:20], "big")
        base = addrs + PROTO_TCP - 20
        seq = ((hp >> sh[1]) & 0xFFFFFFFF) + mss
        total = len(p)
        parts = [p[hl:]]
        residue = -(base + total + (hp & tcp_bits))
        last_flags = flags
        j = i + 1
        while j < n and len(parts) < MAX_COALESCE_SEGS:
            q = packets[j]
            ql = len(q)
            qlen = ql - hl
            if qlen <= 0 or qlen > mss or total + qlen > MAX_COALESCED:
                break
            hq = int.from_bytes(q[:hl], "big")
            if hq & mask != tmpl or (hq >> sh[0]) & 0xFFFF != ql \
                    or (hq >> sh[1]) & 0xFFFFFFFF != seq & 0xFFFFFFFF:
                break
            qf = (hq >> sh[2]) & 0xFF
            if qf & ~TCP_PSH != flags:
                break
            r = -(base + ql + (hq & tcp_bits))
            # A payload that starts at an odd offset of the merged payload
            # has its bytes swapped within 16-bit words: x*256 (mod 0xFFFF).
            residue += r << 8 if (total - hl) & 1 else r
            parts.append(q[hl:])
            total += qlen
            seq += qlen
            last_flags = qf
            j += 1
            if qlen < mss or qf & TCP_PSH:
                break
        if len(parts) == 1:
            yield plain, [p]
            i += 1
            continue
        hdr = bytearray(p[:hl])
        hdr[2:4] = _IP_ID.pack(total)
        hdr[10] = hdr[11] = 0
        c = ip_checksum(hdr[:20])
        hdr[10], hdr[11] = c >> 8, c & 0xFF
        hdr[33] = last_flags
        hdr[36] = hdr[37] = 0
        c = fold(addrs + PROTO_TCP + total - 20 + int.from_bytes(hdr[20:hl], "big") + residue)
        hdr[36], hdr[37] = c >> 8, c & 0xFF
        yield gso.pack_vnet(0, gso.GSO_TCPV4, hl, mss), [hdr] + parts
        i = j


# ----------------------------------------------------------------- devices


class BatchTun(TunDevice):
    """A TUN without offloads, with the batch interface of OffloadTun."""

    offload = False
    uso = False
    tso = False
    why = ""

    def set_tso(self, on: bool) -> bool:
        return False  # no vnet header: no offloads

    def read_packets(self):
        """The packets of one read as a list, or None when the queue is empty."""
        p = self.read()
        return None if p is None else [p]

    read_items = read_packets

    def write_batch(self, packets) -> None:
        """Write packets; a (vnet header, super-packet) pair is cut here,
        since this device takes no GSO header."""
        write = self.write
        for p in packets:
            if type(p) is SuperPacket:
                try:
                    for seg in segment(gso.parse_vnet(p[0]), p[1]):
                        write(seg)
                except (OffloadError, ValueError):
                    pass
            else:
                write(p)


class OffloadTun(BatchTun):
    """A TUN opened with IFF_VNET_HDR and segmentation offloads enabled."""

    offload = True
    tso = True
    coalescing = True
    uso_writes = False  # the kernel takes GSO_UDP_L4 writes (Linux >= 6.2)

    def __init__(self, fd: int, name: str, path: str, uso: bool):
        super().__init__(fd, name, path)
        self.uso = uso
        self.errors = 0  # super-packets that could not be cut
        self.coalesced = 0  # segments merged into GSO writes
        self._pending = collections.deque()

    def set_tso(self, on: bool) -> bool:
        """Turn TSO (and USO where the kernel has it) on or off; allowed at
        any time, e.g. when a v2 session that carries super-packets whole
        comes up or goes. Without TSO the vnet header stays, so merged
        writes keep working. Returns the new state."""
        if on == self.tso:
            return on
        if on:
            base = TUN_F_CSUM | TUN_F_TSO4
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6)
                self.uso = True
            except OSError:
                self.uso = False  # before Linux 6.2
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, base)
        else:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
            self.uso = False
        self.tso = on
        return on

    def read_super(self):
        """(VnetHdr, packet) of one read, or None when the queue is empty."""
        try:
            b = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        if len(b) <= gso.VNET_HDR_LEN:
            return gso.VnetHdr((0, 0, 0, 0, 0, 0)), b""
        return gso.VnetHdr(gso.VNET_HDR.unpack_from(b)), memoryview(b)[gso.VNET_HDR_LEN:]

    def read_packets(self):
        """The packets of one read (a TSO super-packet cut into segments
        with correct checksums), or None when the queue is empty."""
        items = self.read_items()
        if not items or type(items[0]) is not SuperPacket:
            return items
        try:
            return segment(*items[0])
        except OffloadError:
            self.errors += 1
            return []

    def read_items(self):
        """Like read_packets(), but with TSO on a super-packet comes back
        whole, as a (VnetHdr, packet) pair, for a framing that seals it
        once (v2 BULK); None when the queue is empty. One flat function:
        it runs once per packet on an idle tunnel, where every Python call
        on the path is a cold one (docs/FASTPATH.md)."""
        try:
            b = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        if len(b) <= gso.VNET_HDR_LEN:
            return []
        if not b[0] and not b[1]:
            # No offload flag, no GSO type: a complete packet (the usual
            # case with TSO off), no header object needed.
            return [memoryview(b)[gso.VNET_HDR_LEN:]]
        hdr = gso.VnetHdr(gso.VNET_HDR.unpack_from(b))
        pkt = memoryview(b)[gso.VNET_HDR_LEN:]
        if hdr[1] & ~gso.GSO_ECN in (gso.GSO_TCPV4, gso.GSO_UDP_L4) and pkt[0] >> 4 == 4:
            return [SuperPacket(hdr, pkt)]
        try:
            return segment(hdr, pkt)
        except OffloadError:
            self.errors += 1
            return []

    def read(self):
        """One packet; the other segments of a super-packet wait for the
        next calls (read_packets() is the faster interface)."""
        if not self._pending:
            while True:
                pkts = self.read_packets()
                if pkts is None:
                    return None
                if pkts:
                    break
            self._pending.extend(pkts)
        return self._pending.popleft()

    def write(self, packet) -> None:
        # writev() inlined: a lone packet's path, every call a cold one.
        try:
            os.writev(self.fd, (gso.PLAIN_VNET_HDR, packet))
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EIO, errno.EMSGSIZE):
                raise

    def write_super(self, vnet: bytes, parts) -> None:
        """One write: a vnet header and the buffers of one (super-)packet."""
        self.writev([vnet] + list(parts))

    def _write_mixed(self, items) -> None:
        for r in _runs_of_packets(items):
            if type(r) is SuperPacket:
                self.writev([r[0], r[1]])
            else:
                self.write_batch(r)

    def writev(self, bufs) -> None:
        try:
            os.writev(self.fd, bufs)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EIO, errno.EMSGSIZE):
                raise

    def write_batch(self, packets) -> None:
        """Write packets, merging TCP trains. An item may also be a
        (vnet header bytes, packet) pair: a super-packet written as is."""
        writev = self.writev
        if any(type(p) is SuperPacket for p in packets):
            self._write_mixed(packets)
            return
        if not self.coalescing:
            plain = gso.PLAIN_VNET_HDR
            for p in packets:
                writev([plain, p])
            return
        for vnet, bufs in coalesce(packets, self.uso_writes):
            if len(bufs) > 2:
                self.coalesced += len(bufs) - 1
            writev([vnet] + bufs)


def _runs_of_packets(items):
    """Split a mixed list into runs of plain packets and single pairs."""
    run: list = []
    for p in items:
        if type(p) is SuperPacket:
            if run:
                yield run
                run = []
            yield p
        else:
            run.append(p)
    if run:
        yield run


def _open_offload(path: str, tso: bool, name: str = "tun%d") -> OffloadTun:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", gso.VNET_HDR_LEN))
        dev = OffloadTun(fd, ifr[:16].rstrip(b"\0").decode(), path, False)
        dev.tso = False
        # Can this kernel take USO (GSO_UDP_L4) writes? Same version as USO
        # offload (Linux 6.2): ask for it once, then set it back.
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_USO4 | TUN_F_USO6)
            dev.uso_writes = True
        except OSError:
            dev.uso_writes = False
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
        if tso:
            dev.set_tso(True)
    except OSError:
        os.close(fd)
        raise
    return dev


def open_tun(path: str | None = None, offload: bool = True, tso: bool | None = None):
    """The TUN device with offloads if the kernel has them, else plain.

    The device's `why` is one line for the start-up log. camex.ko
    (/dev/camex) has no vnet header, so it is always opened plain."""
    if tso is None:
        # Legacy framing needs one packet per datagram: cutting a
        # super-packet in Python costs more than the kernel's own
        # segmentation plus one read per packet (docs/FASTPATH.md), so TSO
        # is for framings that carry super-packets whole (v2 BULK).
        tso = gso.disabled("notso") is False and "tso" in os.environ.get(
            "CAMEX_FASTPATH", "").split(",")
    if offload and not gso.disabled("novnet") and (
            path is None or os.path.basename(path) != "camex"):
        try:
            dev = _open_offload(path or TUN_PATH, tso)
            dev.coalescing = not gso.disabled("nocoalesce")
            dev.why = "TUN vnet header on, %s, %s" % (
                ("TSO4" + (" and USO" if dev.uso else "")) if tso else "TSO off",
                "merged TCP writes" if dev.coalescing else "no merged writes")
            return dev
        except OSError as e:
            why = f"TUN offloads unavailable ({e.strerror or e})"
    else:
        why = "TUN offloads off"
    plain = open_plain_tun(path)
    dev = BatchTun(plain.fd, plain.name, plain.path)
    dev.why = why
    return dev


__all__ = ["open_tun", "segment", "coalesce", "BatchTun", "OffloadTun"]
