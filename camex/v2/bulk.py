"""BULK records and the TUN: what the v2 cores do with super-packets.

A BULK frame (docs/PROTOCOL.md §4.7) carries records (gso_size G, IPv4 or
IPv6 packet). G > 0 is a super-packet as a TSO TUN read returns it: one IPv4
+ TCP/UDP header, or a plain 40-byte IPv6 + TCP header (no extension
headers), over up to 64 KiB of payload, the L4 checksum field holding
the pseudo-header sum (virtio NEEDS_CSUM). This module turns TUN reads into
records (sender) and records into TUN writes (receiver) - a GSO write with
a virtio_net_hdr when the TUN takes one, else complete packets cut by
camex.base.netpkt.segment (also what DATA-only peers and legacy clients get
on a relay). Pure functions; no I/O.
"""

from __future__ import annotations

from collections import deque
from operator import itemgetter
from typing import Callable
from collections.abc import Iterable

from ..base import netpkt
from ..base.contract import SuperPacket
from . import framing, wire
from .events import FORGED

_BULK_FIELDS = wire.bulk_fields
_HL = wire.HEADER_BULK
_INDEX = itemgetter(3)
_SLICE = itemgetter(slice(_HL, None))
_CONSUME: Callable[[Iterable], None] = deque(maxlen=0).extend     # runs an iterator to its end, in C
_MIDDLE = [bytes(range(1, n - 1)) for n in range(wire.BULK_MAX_FRAGMENTS + 2)]
_MAX_COUNT = wire.BULK_MAX_FRAGMENTS
# (datagram size, fragments) -> the struct gathering the payloads of all
# fragments but the last from a whole frame's GRO read (FastReceiver.whole).
# A path has one datagram size and few frame lengths; emptied when full,
# as framing.repeated_struct's own cache, whatever sizes senders choose.
_GATHER: dict = {}
_GATHER_MAX = 128

PROTO_TCP, PROTO_UDP = 6, 17


def record_of(hdr, packet):
    """(gso_size, packet) for a TSO/USO read of an IPv4 super-packet or a
    TSO read of a TCPv6 one whose TCP header follows the 40-byte IPv6
    header; None if it is not one (the caller cuts it, or drops what
    netpkt.segment cannot cut: IPv6 with extension headers)."""
    gtype = hdr[1] & ~netpkt.GSO_ECN
    if not hdr[3] or len(packet) > 0xFFFF:
        return None
    if gtype in (netpkt.GSO_TCPV4, netpkt.GSO_UDP_L4):
        if len(packet) < 28 or packet[0] >> 4 != 4:
            return None
    elif gtype != netpkt.GSO_TCPV6 or len(packet) < 60 or packet[0] >> 4 != 6 \
            or packet[6] != PROTO_TCP:
        return None
    return hdr[3], packet


def _l4(packet):
    """(L3 header length, header length, proto) of a sane TCP/UDP
    super-packet whose length is the record's length: IPv4, or IPv6 with the
    TCP/UDP header right after its 40 bytes (next header 6 or 17, payload
    length + 40 = L); None otherwise."""
    n = len(packet)
    if n < 28:
        return None
    v = packet[0] >> 4
    if v == 4:
        ihl = (packet[0] & 15) * 4
        proto = packet[9]
        if ihl < 20 or ((packet[2] << 8) | packet[3]) != n:
            return None
    elif v == 6:
        ihl = 40
        proto = packet[6]
        if n < 48 or 40 + ((packet[4] << 8) | packet[5]) != n:
            return None
    else:
        return None
    if proto == PROTO_TCP:
        if n < ihl + 20:
            return None
        hl = ihl + (packet[ihl + 12] >> 4) * 4
        if hl < ihl + 20:
            return None
    elif proto == PROTO_UDP:
        hl = ihl + 8
    else:
        return None
    return (ihl, hl, proto) if hl < n else None


def _plain(packet) -> bool:
    """A complete packet of either family (a G = 0 record)."""
    v = packet[0] >> 4 if packet else 0
    return (v == 4 and len(packet) >= 20) or (v == 6 and len(packet) >= 40)


def segment_count(g: int, packet) -> int:
    """How many packets a record stands for (for packet counters)."""
    if not g:
        return 1
    l4 = _l4(packet)
    return 1 if l4 is None else max(1, -(-(len(packet) - l4[1]) // g))


def tun_items(g: int, packet) -> list:
    """Items for a TUN write list (the daemons' `to_tun`) from one received
    record: the packet itself (G 0), or one (vnet header, packet) pair for a
    TCP super-packet (GSO_TCPV4 or GSO_TCPV6 by its family) - written whole
    where the TUN has a vnet header, cut by the device otherwise. UDP
    super-packets are cut here (a USO write needs Linux >= 6.2 on the
    receiving side; they are rare: only applications that use UDP GSO
    themselves produce them). [] if the record is not a sane IPv4 or IPv6
    packet (dropped)."""
    if not g:
        return [packet] if _plain(packet) else []
    l4 = _l4(packet)
    if l4 is None:
        return []
    ihl, hl, proto = l4
    if proto == PROTO_TCP:
        gtype = netpkt.GSO_TCPV4 if packet[0] >> 4 == 4 else netpkt.GSO_TCPV6
        return [SuperPacket(netpkt.pack_vnet(netpkt.F_NEEDS_CSUM, gtype, hl, g, ihl, 16),
                            packet)]
    return segments(g, packet)


def segments(g: int, packet) -> list:
    """Complete packets (IP and L4 checksums done) for a record: for a
    peer that takes DATA only, a legacy client, or a TUN without offloads."""
    if not g:
        return [packet]
    l4 = _l4(packet)
    if l4 is None:
        return []
    ihl, hl, proto = l4
    if proto == PROTO_TCP:
        gtype, off = (netpkt.GSO_TCPV4 if packet[0] >> 4 == 4 else netpkt.GSO_TCPV6), 16
    else:
        gtype, off = netpkt.GSO_UDP_L4, 6
    try:
        return netpkt.segment(netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, gtype, hl, g, ihl, off)), packet)
    except netpkt.OffloadError:
        return []


def collect(session, frames, stats: dict, fields, now: float, ciphertext=None):
    """One BULK fragment (the fields of wire.parse_bulk) for `session`: the
    frame's plaintext once it is whole and authenticates, else None (what
    was refused is counted in `stats`). Replays and stale counters are
    refused before they take a reassembly slot; the session's window moves
    only when the frame authenticates (Session.open_frame).

    With `ciphertext` (the whole frame's, from one GRO read: see
    FastReceiver.whole()), `fields` are its fragment 0's and no slot is
    used: it opens at once."""
    flags, index, receiver, counter, count, piece = fields
    if not session.fresh(counter):
        stats["replay"] += 1
        return None
    # The flags are part of the frame's AD: fragments that carry other
    # flags cannot be part of it, and keep out of its slot.
    key = (receiver, counter, flags)
    whole = frames.add(key, index, count, piece, now) if ciphertext is None else ciphertext
    if whole is None:
        return None
    plain = session.open_frame(whole, flags, counter, count, now)
    if isinstance(plain, str):
        if plain == FORGED and ciphertext is None:
            # A forged fragment may have come ahead of the sender's own:
            # keep the frame for the genuine one to replace it.
            frames.forged(key)
        stats["forged" if plain == FORGED else "replay"] += 1
        return None
    stats["bulk_rx"] += 1
    return plain


def _same_frame(h, other) -> bool:
    """Two fragments' header fields agree on all but the index."""
    return h[4:] == other[4:] and h[:3] == other[:3]


class FastReceiver:
    """A core's DatagramReceiver (camex.base.contract), with the per-fragment
    fast path in front (camex.v2.framing.Reassembly.last): if `data` is the
    next, not the last, fragment of the BULK frame that `frames` started
    last (same receiver, counter and flags, the expected index, the same
    count, reserved bytes 0), its slice is appended and that is all. Anything
    else - the last fragment too, which completes the frame - goes to
    `slow(data, ...)`. Flat on purpose: it runs for every middle fragment
    of a frame that does not arrive whole, one Python call each.

    Its `many` takes a GRO batch fragment by fragment, its `whole` a GRO
    read that is exactly one frame (handed to `frame(fragment 0,
    ciphertext, ...)`: the usual case, one read per frame). A daemon binds
    `__call__` once per socket event, so a call costs what a closure's did."""

    __slots__ = ("frames", "slow", "frame", "one")

    def __init__(self, frames, slow, frame):
        self.frames = frames    # the Reassembly whose `last` slot is filled here
        self.slow = slow        # (data, ...): the full path of the core
        self.frame = frame      # (fragment 0, ciphertext, ...): a whole frame
        # DatagramReceiver.one: this, unless the core puts its flat path for
        # a lone DATA datagram in front (camex.v2.lone, slow=this).
        self.one = self.__call__

    def __call__(self, d, *rest):
        last = self.frames.last
        if last is not None and len(d) > _HL:
            h = _BULK_FIELDS(d)
            key, slot = last
            index = h[3]
            if h[5] == key[1] and h[4] == key[0] and index == slot[3] and h[6] == slot[1] \
                    and h[2] == key[2] \
                    and index + 1 < h[6] and h[1] == 6 and h[0] == 0xC2 and not h[7] \
                    and not h[8] and slot[2] is None:
                slot[4] += memoryview(d)[_HL:]
                slot[3] = index + 1
                return
        self.slow(d, *rest)

    def many(self, ds, *rest):
        """All datagrams of one receive (a UDP GRO batch: one sender, in
        order). From a fragment 0 on, the fragments that follow in index
        order (checked on the index bytes) with equal sizes are appended in
        one C loop; fragment 0 takes the full path (checks, the frame's
        slot), and so does the last fragment, if it is in this batch and
        its header matches the first's. A frame of more than 44 fragments
        spans two sends and two batches: the rest then comes fragment by
        fragment. Anything else goes one by one, unchanged."""
        frames, slow, one = self.frames, self.slow, self.__call__
        i, n = 0, len(ds)
        while i < n:
            d = ds[i]
            if n - i > 2 and len(d) > _HL and d[1] == 6 and d[3] == 0 and d[0] == 0xC2 \
                    and 2 < d[16] <= _MAX_COUNT:
                c = d[16]
                whole = c <= n - i
                k = c - 1 if whole else n - i     # fragments 1 .. k-1 are here
                mids = ds[i + 1:i + k]
                size = len(d)
                # Sizes first: a shorter datagram (a GRO batch may end with
                # one of any length) has no index byte to read.
                if all(len(m) == size for m in mids) and \
                        bytes(map(_INDEX, mids)) == _MIDDLE[k + 1]:
                    h = _BULK_FIELDS(d)
                    end = ds[i + c - 1] if whole else None
                    if end is None or (len(end) > _HL and end[3] == c - 1
                                       and _same_frame(h, _BULK_FIELDS(end))):
                        slow(d, *rest)            # checks, and opens the frame's slot
                        last = frames.last
                        if last is not None and last[0] == (h[4], h[5], h[2]) \
                                and last[1][3] == 1 and last[1][2] is None:
                            slot = last[1]
                            _CONSUME(map(slot[4].extend, map(_SLICE, mids)))
                            slot[3] = k
                            if whole:
                                slow(end, *rest)  # completes the frame
                            i += k + 1
                            continue
                        i += 1                    # fragment 0 refused: one by one
                        continue
            one(d, *rest)
            i += 1

    def whole(self, data, size: int, *rest) -> bool:
        """A UDP GRO receive (`data`, datagrams of `size` bytes, the last
        one shorter) that is exactly one whole BULK frame, in order, as one
        GSO send of a peer arrives over a path that keeps it whole (veth,
        or GRO on a NIC). The fragments' slices are gathered by one struct
        call and one join (no Python call per fragment) and the frame goes to
        `frame(fragment 0, ciphertext, ...)`, which opens it without a
        reassembly slot. False, with nothing done, for any other batch:
        the caller splits it and calls many()."""
        n = len(data)
        c = -(-n // size)
        if 2 < c <= _MAX_COUNT and size > _HL and data[16] == c and data[1] == 6 \
                and data[0] == 0xC2 and data[3::size] == framing.INDEX_BYTES[c]:
            at = (c - 1) * size
            # The last fragment's header is the first's but for the index
            # (_same_frame, inline: bytes 0-2 and 4-19).
            if n - at > _HL and data[at + 4:at + _HL] == data[4:_HL] \
                    and data[at:at + 3] == data[:3]:
                gather = _GATHER.get((size, c))
                if gather is None:
                    if len(_GATHER) >= _GATHER_MAX:     # (sizes a sender chose)
                        _GATHER.clear()
                    gather = _GATHER[(size, c)] = framing.repeated_struct(
                        f"{_HL}x{size - _HL}s", c - 1)
                mv = memoryview(data)
                self.frame(mv[:size], b"".join((*gather.unpack_from(data), mv[at + _HL:])),
                           *rest)
                return True
        return False


def plaintexts(records, max_plain: int):
    """Group records into frame plaintexts of at most `max_plain` bytes
    (a record never spans two frames). Yields bytes."""
    batch: list = []
    size = 0
    for g, p in records:
        need = len(p) + wire.BULK_RECORD
        if batch and size + need > max_plain:
            yield wire.pack_bulk_records(batch)
            batch, size = [], 0
        batch.append((g, p))
        size += need
    if batch:
        yield wire.pack_bulk_records(batch)
