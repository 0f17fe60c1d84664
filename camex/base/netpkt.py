"""The virtio-net header and the packet work that needs no syscall: Internet checksums,
cutting a TSO/USO super-packet into packets (`segment`), merging packets into one
(`coalesce`), and the CAMEX_FASTPATH switches (`disabled`). IPv4 and IPv6
(TCPv6 and UDPv6 without extension headers: see `segment`).

The TUN device side (reads, writes, ioctls) is camex.io.offload; v2's BULK
fast path uses this module directly.
"""

from __future__ import annotations

import os
import struct



# ---------------------------------------------------------- virtio_net_hdr

# struct virtio_net_hdr { u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size;
#                         u16 csum_start; u16 csum_offset; }
# A TUN device uses the host's byte order (legacy virtio) unless told
# otherwise with TUNSETVNETLE/BE, which we never do.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10

F_NEEDS_CSUM = 1  # the checksum at csum_start+csum_offset is still to be done
F_DATA_VALID = 2  # the checksum was verified (receive path)

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO, obsolete
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO
GSO_ECN = 0x80

# A plain packet: no offload asked, checksums already complete.
PLAIN_VNET_HDR = VNET_HDR.pack(0, GSO_NONE, 0, 0, 0, 0)


class VnetHdr(tuple):
    """Parsed virtio_net_hdr: (flags, gso_type, hdr_len, gso_size,
    csum_start, csum_offset). A tuple subclass: cheap to make, fields by name."""

    __slots__ = ()
    flags = property(lambda s: s[0])
    gso_type = property(lambda s: s[1])
    hdr_len = property(lambda s: s[2])
    gso_size = property(lambda s: s[3])
    csum_start = property(lambda s: s[4])
    csum_offset = property(lambda s: s[5])


def pack_vnet(flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0,
              gso_size: int = 0, csum_start: int = 0, csum_offset: int = 0) -> bytes:
    return VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def parse_vnet(buf) -> VnetHdr:
    if len(buf) < VNET_HDR_LEN:
        raise ValueError(f"{len(buf)} bytes is shorter than a virtio_net_hdr")
    return VnetHdr(VNET_HDR.unpack_from(buf))


def disabled(word: str) -> bool:
    """True if $CAMEX_FASTPATH (comma-separated) names `word` or "off":
    a switch for benchmarks and for ruling the fast path out when a bug
    is suspected, e.g. CAMEX_FASTPATH=nogso,notso."""
    words = os.environ.get("CAMEX_FASTPATH", "").replace(" ", "").split(",")
    return word in words or "off" in words


PROTO_TCP = 6
PROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
MAX_COALESCED = 65535  # length of a coalesced write (IPv4's total length field)
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


def pseudo6(packet, proto: int, l4len: int) -> int:
    """Residue of the IPv6 pseudo-header (RFC 8200 8.1) of `packet`: both
    addresses, the upper-layer length and the next header value. Its
    32-bit length and the zero bytes before the next header change nothing
    in a word sum, so it is the same formula as IPv4's with 32 address bytes."""
    return int.from_bytes(packet[8:40], "big") + proto + l4len


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
    # fold(sum16(b[start:])), inline: with TSO on, every ACK of a TCP
    # stream comes this way.
    x = int.from_bytes(memoryview(b)[start:], "big")
    if (len(b) - start) & 1:
        x <<= 8
    c = x % 0xFFFF
    c = 0xFFFF - c if c else 0
    if c == 0 and offset == 6:  # UDP
        c = 0xFFFF
    b[at] = c >> 8
    b[at + 1] = c & 0xFF
    return b


# ------------------------------------------------------------ segmentation


class OffloadError(ValueError):
    """A super-packet we cannot cut (not IPv4/IPv6 TCP/UDP, inconsistent)."""


def segment(hdr: VnetHdr, packet) -> list:
    """Complete packets (checksums done) from one TUN read.

    `hdr` is the parsed virtio_net_hdr, `packet` the bytes after it. The
    GSO type must match the IP version (TCPV4 on IPv4, TCPV6 on IPv6, USO
    on either), as the kernel's own checks want. An IPv6 super-packet is cut
    only when its TCP/UDP header follows the fixed header directly: with
    extension headers the pseudo-header may need the final destination of
    a routing header and the per-segment headers would have to be walked,
    for packets Linux's TCP makes only when an application sets IPv6
    options; such a super-packet raises OffloadError (dropped and counted
    by the caller, as any packet that cannot be cut), never goes out whole.
    Raises OffloadError for what cannot be cut (the caller drops it)."""
    gtype = hdr[1] & ~GSO_ECN
    if gtype == GSO_NONE:
        if hdr[0] & F_NEEDS_CSUM:
            if hdr[4] + hdr[5] + 2 > len(packet):
                raise OffloadError("checksum offset beyond the packet")
            return [complete_csum(packet, hdr[4], hdr[5])]
        return [packet]
    version = packet[0] >> 4 if len(packet) >= 20 else 0
    if version == 4:
        if gtype == GSO_TCPV4:
            return segment_tcp4(packet, hdr[3])
        if gtype == GSO_UDP_L4:
            return segment_udp4(packet, hdr[3])
    elif version == 6:
        if gtype == GSO_TCPV6:
            return segment_tcp6(packet, hdr[3])
        if gtype == GSO_UDP_L4:
            return segment_udp6(packet, hdr[3])
    else:
        raise OffloadError("GSO packet is neither IPv4 nor IPv6")
    raise OffloadError(f"GSO type {hdr[1]} not supported for IPv{version}")


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


def _headers6(packet, proto: int) -> int:
    """The end (40 + payload length) of a sane IPv6 super-packet whose
    next header is `proto` itself (no extension headers)."""
    if len(packet) < 48:
        raise OffloadError("truncated IPv6 GSO packet")
    total = 40 + ((packet[4] << 8) | packet[5])
    if packet[6] != proto:
        raise OffloadError(f"IPv6 GSO packet with next header {packet[6]}, not {proto}"
                           " (extension headers are not cut)")
    if total > len(packet) or total <= 40:
        raise OffloadError("bad IPv6 payload length in a GSO packet")
    return total


def segment_tcp6(packet, mss: int) -> list:
    """Cut an IPv6/TCP super-packet into segments of `mss` payload bytes:
    segment_tcp4 without the IP ID and IP checksum (IPv6 has neither); the
    payload length, sequence numbers, flags (CWR first, FIN/PSH last) and
    the TCP checksum over the IPv6 pseudo-header are set per segment."""
    total = _headers6(packet, PROTO_TCP)
    if total < 60:
        raise OffloadError("truncated TCP header")
    thl = (packet[52] >> 4) * 4
    hl = 40 + thl
    if thl < 20 or hl > total or mss <= 0:
        raise OffloadError("bad TCP header or MSS in a GSO packet")
    mv = memoryview(packet)
    tcph = bytearray(mv[40:hl])
    tcph[16] = tcph[17] = 0
    pseudo = int.from_bytes(mv[8:40], "big") + PROTO_TCP
    iph = bytearray(mv[:40])
    if total - hl <= mss:
        seg = iph + tcph
        seg += mv[hl:total]
        c = fold(pseudo + total - 40 + sum16(memoryview(seg)[40:]))
        seg[56], seg[57] = c >> 8, c & 0xFF
        return [seg]
    seq0 = int.from_bytes(tcph[4:8], "big")
    flags = tcph[13]
    out = []
    last_off = total - ((total - hl - 1) % mss + 1)
    first = True
    for off in range(hl, total, mss):
        end = off + mss if off + mss < total else total
        plen = end - off
        iph[4:6] = _IP_ID.pack(thl + plen)
        tcph[4:8] = ((seq0 + off - hl) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if not first:
            f &= ~TCP_CWR
        if off != last_off:
            f &= ~(TCP_FIN | TCP_PSH)
        tcph[13] = f
        seg = iph + tcph
        seg += mv[off:end]
        c = fold(pseudo + thl + plen + sum16(memoryview(seg)[40:]))
        seg[56], seg[57] = c >> 8, c & 0xFF
        out.append(seg)
        first = False
    return out


def segment_udp6(packet, size: int) -> list:
    """Cut an IPv6/UDP super-packet (USO) into datagrams of `size` payload
    bytes; a UDP checksum is mandatory over IPv6 (0 is sent as 0xFFFF)."""
    total = _headers6(packet, PROTO_UDP)
    if size <= 0:
        raise OffloadError("bad UDP GSO packet")
    mv = memoryview(packet)
    iph = bytearray(mv[:40])
    udph = bytearray(mv[40:48])
    pseudo = int.from_bytes(mv[8:40], "big") + PROTO_UDP
    out = []
    for off in range(48, total, size):
        end = min(off + size, total)
        plen = end - off
        iph[4:6] = udph[4:6] = _IP_ID.pack(8 + plen)
        udph[6] = udph[7] = 0
        seg = iph + udph
        seg += mv[off:end]
        c = fold(pseudo + 8 + plen + sum16(memoryview(seg)[40:])) or 0xFFFF
        seg[46], seg[47] = c >> 8, c & 0xFF
        out.append(seg)
    return out


# ------------------------------------------------------------- coalescing


def _tcp_info(p):
    """(TCP header length, flags, IP header length) of a plain IPv4/TCP
    or IPv6/TCP packet that may be coalesced, else None. IPv6 only when TCP
    follows the fixed header directly (no extension headers)."""
    n = len(p)
    if n < 40:
        return None
    if p[0] == 0x45:
        if p[9] != PROTO_TCP or (p[2] << 8 | p[3]) != n or p[6] & 0x3F or p[7]:  # fragments, MF
            return None
        ipl = 20
    elif p[0] >> 4 == 6:
        if n < 60 or p[6] != PROTO_TCP or (p[4] << 8 | p[5]) != n - 40:
            return None
        ipl = 40
    else:
        return None
    thl = (p[ipl + 12] >> 4) * 4
    flags = p[ipl + 13]
    if thl < 20 or ipl + thl > n or flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG) \
            or not flags & TCP_ACK:
        return None
    return thl, flags, ipl

_MASKS: dict = {}


def _masks(hl: int, ipl: int = 20):
    """For a header of `hl` bytes (IPv4 without options or IPv6 without
    extension headers, `ipl` bytes, then TCP): the mask of the bytes two
    segments of one train share (IPv4 version/IHL/TOS, DF/TTL/protocol;
    IPv6 version/traffic class/flow label, next header, hop limit;
    addresses, ports, ack, data offset, window, urgent pointer, options;
    not length, IP ID, checksums, sequence or flags), and the bit shifts
    of the IP length field, sequence number and flags."""
    m = _MASKS.get((hl, ipl))
    if m is None:
        keep = bytearray(b"\xff" * hl)
        t = ipl - 20  # TCP fields sit 20 bytes further in IPv6
        ip_fields = ((2, 6), (10, 12)) if ipl == 20 else ((4, 6),)
        for lo, hi in ip_fields + ((t + 24, t + 28), (t + 33, t + 34), (t + 36, t + 38)):
            keep[lo:hi] = bytes(hi - lo)
        shift = lambda end: (hl - end) * 8  # noqa: E731 (bit offset of a field ending at `end`)
        m = _MASKS[(hl, ipl)] = (int.from_bytes(keep, "big"),
                                 (shift(4 if ipl == 20 else 6), shift(t + 28), shift(t + 34)))
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
    yield pack_vnet(F_NEEDS_CSUM, GSO_UDP_L4, 28, size - 28, 20, 6), [hdr] + parts
    return j


def coalesce(packets, udp: bool = True):
    """Group complete IPv4 and IPv6 packets for TUN writes, order kept.

    Yields (vnet header bytes, [buffers]) per write. A run of in-order TCP
    segments of one flow (same addresses, ports, ack, window, options and
    TOS/TTL/DF, or traffic class/flow label/hop limit; equal payload sizes
    except a shorter last one; PSH only on the last) becomes one GSO_TCPV4
    or GSO_TCPV6 write, the way the kernel's GRO hands a train to TCP. IPv6
    packets with extension headers are written alone. Its TCP checksum is
    the full checksum of the merged
    packet, computed from the segments' own checksums (no payload bytes are
    read): a valid segment satisfies pseudo + header (checksum field
    included) + payload = 0 (mod 0xFFFF), so its payload's sum follows from
    its header. If a field lies, the merged checksum is wrong too, and the
    kernel, which is given no "checksum valid" flag, drops the merged packet
    as it would have dropped the bad segment. Anything else is written
    alone, unchanged. Small UDP datagrams merge into USO writes (IPv4 only).
    """
    i, n = 0, len(packets)
    plain = PLAIN_VNET_HDR
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
        thl, flags, ipl = info
        hl = ipl + thl
        mss = len(p) - hl
        if mss <= 0 or flags & TCP_PSH:
            yield plain, [p]
            i += 1
            continue
        # The whole header as one integer: what must be equal is compared
        # under a mask, the rest (length, seq, flags, checksum) is read
        # from it with shifts. One C call per segment.
        mask, sh = _masks(hl, ipl)
        hp = int.from_bytes(p[:hl], "big")
        tmpl = hp & mask
        tcp_bits = (1 << (thl * 8)) - 1
        # IPv4's length field is the packet's length, IPv6's leaves out
        # the 40-byte fixed header.
        lenadj = 0 if ipl == 20 else 40
        addrs = int.from_bytes(p[12:20] if ipl == 20 else p[8:40], "big")
        base = addrs + PROTO_TCP - ipl
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
            if hq & mask != tmpl or (hq >> sh[0]) & 0xFFFF != ql - lenadj \
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
        if ipl == 20:
            hdr[2:4] = _IP_ID.pack(total)
            hdr[10] = hdr[11] = 0
            c = ip_checksum(hdr[:20])
            hdr[10], hdr[11] = c >> 8, c & 0xFF
            gtype = GSO_TCPV4
        else:
            hdr[4:6] = _IP_ID.pack(total - 40)
            gtype = GSO_TCPV6
        hdr[ipl + 13] = last_flags
        hdr[ipl + 16] = hdr[ipl + 17] = 0
        c = fold(addrs + PROTO_TCP + total - ipl + int.from_bytes(hdr[ipl:hl], "big") + residue)
        hdr[ipl + 16], hdr[ipl + 17] = c >> 8, c & 0xFF
        yield pack_vnet(0, gtype, hl, mss), [hdr] + parts
        i = j
