"""TUN segmentation offloads: big reads, merged writes, Internet checksums.

A TUN opened with IFF_VNET_HDR puts a virtio_net_hdr before every packet,
which lets us hand the kernel one GSO "super-packet" per write: a train of
in-order TCP segments of one flow (or small datagrams of one UDP flow)
merged as the kernel's GRO would (`coalesce`), so its TCP sees one skb
instead of ~45. With TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
[| USO]) the kernel also READS up to 64 KiB of one flow at once (TCP over
IPv4 or IPv6, UDP with USO), checksum left to us;
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
daemons do not care which one they got. The packet work itself (checksums,
`segment`, `coalesce`) needs no device: it is camex.base.netpkt.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import struct

from ..base import netpkt
from ..base.netpkt import OffloadError, coalesce, segment
from ..base.contract import SuperPacket
from .tun import IFF_NO_PI, IFF_TUN, TUN_PATH, TUNSETIFF, TunDevice
from .tun import open_tun as open_plain_tun

_CSUM_AT = struct.Struct("=HH")     # csum_start, csum_offset of a virtio_net_hdr

TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40  # the kernel wants USO4 and USO6 together


READ_SIZE = netpkt.VNET_HDR_LEN + 65535 + 1

# What TSO on asks for: TCP super-packets of both families. Every reader of
# a TSO TUN takes TCPv6 ones: read_items() passes IPv4 super-packets and
# TCPv6 ones without extension headers on whole (to v2 BULK, whose records
# are of either family) and cuts the others with netpkt.segment;
# read_packets() and the devices without a vnet header cut everything. CAMEX_FASTPATH=notso6 leaves TSO6
# out (the kernel then cuts TCPv6 itself, one read per segment).
TSO_FLAGS = TUN_F_CSUM | TUN_F_TSO4 | (0 if netpkt.disabled("notso6") else TUN_F_TSO6)


# ----------------------------------------------------------------- devices


class BatchTun(TunDevice):
    """A TUN without offloads, with the batch interface of OffloadTun."""

    offload = False
    uso = False
    tso = False
    why = ""

    def set_tso(self, on: bool) -> bool:
        return False  # no vnet header: no offloads

    def counters(self) -> dict:
        """The TUN's part of `camex status --json`: TSO on or off, reads
        that could not be cut (`errors`), segments merged into GSO writes,
        and GSO writes by type (super-packets of BULK and merged trains)."""
        gso = getattr(self, "gso_writes", None) or [0] * 6
        return {"offload": self.offload, "tso": self.tso, "errors": getattr(self, "errors", 0),
                "coalesced": getattr(self, "coalesced", 0),
                "gso_writes": {"tcp4": gso[netpkt.GSO_TCPV4], "tcp6": gso[netpkt.GSO_TCPV6],
                               "udp": gso[netpkt.GSO_UDP_L4]}}

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
                    for seg in segment(netpkt.parse_vnet(p[0]), p[1]):
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
        self.gso_writes = [0] * 6  # GSO writes by virtio gso_type (ECN bit aside)
        self._pending = collections.deque()

    def set_tso(self, on: bool) -> bool:
        """Turn TSO (and USO where the kernel has it) on or off; allowed at
        any time, e.g. when a v2 session that carries super-packets whole
        comes up or goes. Without TSO the vnet header stays, so merged
        writes keep working. Returns the new state."""
        if on == self.tso:
            return on
        if on:
            base = TSO_FLAGS
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
        if len(b) <= netpkt.VNET_HDR_LEN:
            return netpkt.VnetHdr((0, 0, 0, 0, 0, 0)), b""
        return netpkt.VnetHdr(netpkt.VNET_HDR.unpack_from(b)), memoryview(b)[netpkt.VNET_HDR_LEN:]

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
        whole, as a (VnetHdr, packet) pair, for a framing that seals it once
        (v2 BULK): IPv4 TCP or UDP, and TCPv6 whose TCP header follows the
        fixed IPv6 header (one with extension headers goes to
        netpkt.segment, which refuses it: counted in `errors`); None when
        the queue is empty. One flat function:
        it runs once per packet on an idle tunnel, where every Python call
        on the path is a cold one (docs/FASTPATH.md)."""
        try:
            b = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        if len(b) <= netpkt.VNET_HDR_LEN:
            return []
        if not b[0] and not b[1]:
            # No offload flag, no GSO type: a complete packet (the usual
            # case with TSO off), no header object needed.
            return [memoryview(b)[netpkt.VNET_HDR_LEN:]]
        if not b[1] and b[0] & netpkt.F_NEEDS_CSUM:
            # One packet whose L4 checksum is left to us (with TSO on, the
            # kernel's every small packet: a TCP stream's ACKs), finished
            # here as netpkt.segment would, without a header object.
            start, offset = _CSUM_AT.unpack_from(b, 6)
            if start + offset + 2 > len(b) - netpkt.VNET_HDR_LEN:
                self.errors += 1
                return []
            return [netpkt.complete_csum(memoryview(b)[netpkt.VNET_HDR_LEN:], start, offset)]
        hdr = netpkt.VnetHdr(netpkt.VNET_HDR.unpack_from(b))
        pkt = memoryview(b)[netpkt.VNET_HDR_LEN:]
        gtype = hdr[1] & ~netpkt.GSO_ECN
        if gtype in (netpkt.GSO_TCPV4, netpkt.GSO_UDP_L4) and pkt[0] >> 4 == 4 or \
                gtype == netpkt.GSO_TCPV6 and pkt[0] >> 4 == 6 and len(pkt) >= 60 and pkt[6] == 6:
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
            os.writev(self.fd, (netpkt.PLAIN_VNET_HDR, packet))
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
                self.gso_writes[r[0][1] & 7] += 1
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
        if len(packets) == 1 and type(packets[0]) is SuperPacket:
            # One received BULK frame's super-packet (a TCP stream's usual
            # flush): one writev, none of the mixed-list machinery below.
            item = packets[0]
            self.gso_writes[item[0][1] & 7] += 1
            self.writev(item)
            return
        writev = self.writev
        if any(type(p) is SuperPacket for p in packets):
            self._write_mixed(packets)
            return
        if not self.coalescing:
            plain = netpkt.PLAIN_VNET_HDR
            for p in packets:
                writev([plain, p])
            return
        for vnet, bufs in coalesce(packets, self.uso_writes):
            if len(bufs) > 2:
                self.coalesced += len(bufs) - 1
                self.gso_writes[vnet[1] & 7] += 1
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
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", netpkt.VNET_HDR_LEN))
        dev = OffloadTun(fd, ifr[:16].rstrip(b"\0").decode(), path, False)
        dev.tso = False
        # Can this kernel take USO (GSO_UDP_L4) writes? Same version as USO
        # offload (Linux 6.2): ask for it once, then set it back.
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TSO_FLAGS | TUN_F_USO4 | TUN_F_USO6)
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
        tso = netpkt.disabled("notso") is False and "tso" in os.environ.get(
            "CAMEX_FASTPATH", "").split(",")
    if offload and not netpkt.disabled("novnet") and (
            path is None or os.path.basename(path) != "camex"):
        try:
            dev = _open_offload(path or TUN_PATH, tso)
            dev.coalescing = not netpkt.disabled("nocoalesce")
            dev.why = "TUN vnet header on, %s, %s" % (
                (("TSO4, TSO6" if TSO_FLAGS & TUN_F_TSO6 else "TSO4")
                 + (" and USO" if dev.uso else "")) if tso else "TSO off",
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
