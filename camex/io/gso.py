"""Batched UDP and the virtio-net header: the kernel's segmentation offloads.

Three things live here, shared by the legacy fast path and by v2:

- the virtio_net_hdr that a TUN device opened with IFF_VNET_HDR puts in
  front of every packet (pack/parse);
- UDP GSO: one sendmsg() with a UDP_SEGMENT control message hands the
  kernel a run of datagrams that all have `size` bytes except the last,
  which may be shorter (Linux >= 4.18);
- UDP GRO: with UDP_GRO on a socket, one recvmsg() may return several
  datagrams of one sender glued together plus a control message giving
  their size; `split()` cuts them apart again (Linux >= 5.0).

`probe()` tells which of these the running kernel has, so the daemons can
fall back to one datagram per syscall on older kernels (cameras).
No I/O happens at import time. The pure part (datagram runs, frames cut
over datagrams) is camex.v2.framing; the virtio-net header is
camex.base.netpkt.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

from ..base.endpoint import MAPPED, canonical, sockaddr_v6
from ..base.netpkt import disabled
from ..v2.framing import MAX_GSO_BYTES, MAX_SEGMENTS, Run, datagrams_of, runs, split

SOL_UDP = 17
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)

# Room for the largest coalesced read plus its control message.
RECV_BUF = 65536 + 4096
GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 64


# ------------------------------------------------------------- UDP GSO/GRO


def set_gso_size(sock: socket.socket, size: int) -> None:
    """Socket-wide UDP_SEGMENT (0 turns it off); the per-call cmsg overrides it."""
    sock.setsockopt(SOL_UDP, UDP_SEGMENT, size)


def send_gso(sock: socket.socket, datagrams, size: int, addr=None) -> int:
    """Send `datagrams` (one run from `runs()`: a list, or a Run) with one
    sendmsg.

    The list is passed as the iovec, so nothing is joined in Python. A run
    of one datagram is sent without the cmsg (the kernel rejects a GSO size
    larger than the payload on some versions).
    """
    if type(datagrams) is Run:
        # One buffer, cut by the kernel; a single datagram needs no cmsg.
        datagrams = [datagrams.buf]
        if len(datagrams[0]) > size:
            return _send_segmented(sock, datagrams, size, addr)
    if len(datagrams) == 1:
        if addr is None:
            return sock.send(datagrams[0])
        return sock.sendto(datagrams[0], addr)
    return _send_segmented(sock, datagrams, size, addr)


def _send_segmented(sock, buffers, size: int, addr) -> int:
    anc = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
    if addr is None:
        return sock.sendmsg(buffers, anc)
    return sock.sendmsg(buffers, anc, 0, addr)


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced receives; False if the kernel does not know UDP_GRO."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gro_size(ancdata) -> int:
    """The segment size of a coalesced receive, or 0 for a single datagram."""
    for level, typ, data in ancdata:
        if level == SOL_UDP and typ == UDP_GRO and len(data) >= 2:
            # The kernel puts an int here; its low 16 bits are the size.
            return struct.unpack_from("=i", data.ljust(4, b"\0"))[0] & 0xFFFF
    return 0


# The receivers read the usual control message (one UDP_GRO int) inline,
# without gro_size()'s loop: one Python call fewer per GRO read.
_GRO_INT = struct.Struct("=i").unpack
_GRO_KEY = (SOL_UDP, UDP_GRO)


def recv_gro(sock: socket.socket, bufsize: int = RECV_BUF):
    """One recvmsg: (list of datagrams, address). Raises BlockingIOError
    when empty, like recv()."""
    data, anc, _flags, addr = sock.recvmsg(bufsize, GRO_CMSG_SPACE)
    return split(data, gro_size(anc) if anc else 0), addr


# --------------------------------------------------- what the daemons use


class Sender:
    """Sends lists of datagrams with as few syscalls as the kernel allows.

    With `gso` on, each run of equal-sized datagrams (see runs()) is one
    sendmsg(). If the kernel refuses a GSO send (EIO: the route's device
    cannot checksum; EINVAL/ENOPROTOOPT: no UDP_SEGMENT), GSO is switched
    off for good and the run is sent one datagram at a time. A full socket
    buffer drops the rest of the run, as a NIC queue would. Other errors go
    to `on_error(exc, addr)` (the daemon throttles its log).
    """

    def __init__(self, sock, gso: bool, on_error=None, to_sock=None, batch=None):
        self.sock = sock
        # send_grouped's addresses are canonical endpoints: `to_sock` maps
        # one to the socket's form (sockaddr_for), once per group.
        self.to_sock = to_sock
        # camex.io.mmsg.Batch: datagrams to many destinations in one
        # sendmmsg (it takes canonical endpoints as they are).
        self.batch = batch
        self.gso = gso and hasattr(sock, "sendmsg")
        self.on_error = on_error
        self.sends = 0  # syscalls, for status and benchmarks
        self.fallback_reason = None
        # Largest datagram GSO may carry: GSO cannot IP-fragment, so
        # datagrams above the path MTU (EMSGSIZE) go one by one and the
        # kernel fragments each, as without GSO. Per outer family (index
        # 1: IPv6 peers of a dual-stack socket, whose path is 20 bytes
        # shorter), so that an IPv6 peer's limit never slows IPv4 ones.
        self.max_sizes = [65535, 65535]
        self._anc: dict = {}      # datagram size -> its UDP_SEGMENT control message (send_run)

    def send(self, datagrams, addr=None) -> None:
        if not self.gso:
            self._one_by_one(datagrams, addr)
            return
        v6 = addr is not None and ":" in addr[0] and not addr[0].startswith(MAPPED)
        max_sizes = self.max_sizes
        for size, run in runs(datagrams):
            if size > max_sizes[v6] and _many(run):
                self._one_by_one(run, addr)
                continue
            self.sends += 1
            try:
                send_gso(self.sock, run, size, addr)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            except OSError as e:
                self._failed(e, run, size, addr, v6)

    def _failed(self, e: OSError, run, size: int, addr, v6: int) -> None:
        """A GSO send of `run` (datagrams of `size` bytes) failed: above the path MTU, that size goes
        one by one from now on; refused outright, GSO goes off for good;
        anything else to on_error."""
        if _many(run) and e.errno == errno.EMSGSIZE:
            self.max_sizes[v6] = size - 1
            self._one_by_one(run, addr)
        elif _many(run) and e.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT,
                                        errno.EOPNOTSUPP):
            self.gso = False
            self.fallback_reason = f"UDP GSO refused ({e.strerror}), sending one by one"
            self._one_by_one(run, addr)
        elif self.on_error is not None:
            self.on_error(e, addr)

    def send_run(self, run: Run, addr=None) -> None:
        """send([run], addr), flat: one BULK frame, a TCP stream's usual
        send, in one sendmsg without runs() and its helpers (`addr` in the
        socket's form, as send() takes it; None on a connected socket).
        Anything send() would treat otherwise (GSO off, one datagram, a
        size above the path's, more than one send's worth) goes through
        send()."""
        buf, size = run.buf, run.size
        n = len(buf)
        v6 = addr is not None and ":" in addr[0] and not addr[0].startswith(MAPPED)
        if not self.gso or n <= size or size > self.max_sizes[v6] or n > MAX_GSO_BYTES \
                or n > size * MAX_SEGMENTS:
            self.send([run], addr)
            return
        anc = self._anc.get(size)
        if anc is None:
            anc = self._anc[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        self.sends += 1
        try:
            if addr is None:
                self.sock.sendmsg((buf,), anc)
            else:
                self.sock.sendmsg((buf,), anc, 0, addr)
        except (BlockingIOError, ConnectionRefusedError):
            pass
        except OSError as e:
            self._failed(e, run, size, addr, v6)

    def send_grouped(self, pairs) -> None:
        """(datagram, address) pairs, batched per address (order kept per
        address; different addresses are independent flows anyway)."""
        to_sock, batch = self.to_sock, self.batch
        if not self.gso or (len(pairs) == 1 and type(pairs[0][0]) is not Run):
            if batch is not None and len(pairs) > 1 and not any(type(d) is Run for d, _ in pairs):
                batch.send(pairs)
                return
            for d, addr in pairs:
                self._one_by_one((d,), addr if to_sock is None else to_sock(addr))
            return
        groups: dict = {}
        for d, addr in pairs:
            g = groups.get(addr)
            if g is None:
                groups[addr] = [d]
            else:
                g.append(d)
        if batch is not None:
            # A lone datagram per destination (a fleet's cameras talking to
            # one another) goes out with the others in one sendmmsg; two
            # or more to one destination in one GSO send.
            singles = [(ds[0], addr) for addr, ds in groups.items()
                       if len(ds) == 1 and type(ds[0]) is not Run]
            if len(singles) > 1:
                batch.send(singles)
                for addr, ds in groups.items():
                    if len(ds) > 1 or type(ds[0]) is Run:
                        self.send(ds, addr if to_sock is None else to_sock(addr))
                return
        for addr, ds in groups.items():
            self.send(ds, addr if to_sock is None else to_sock(addr))

    def _one_by_one(self, datagrams, addr) -> None:
        sock = self.sock
        datagrams = datagrams.datagrams() if type(datagrams) is Run else datagrams_of(datagrams)
        for d in datagrams:
            self.sends += 1
            try:
                if addr is None:
                    sock.send(d)
                else:
                    sock.sendto(d, addr)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            except OSError as e:
                if self.on_error is not None:
                    self.on_error(e, addr)


def _many(run) -> bool:
    """Does a run from runs() hold more than one datagram?"""
    return len(run.buf) > run.size if type(run) is Run else len(run) > 1


def gro_receiver(sock, bufsize: int = RECV_BUF):
    """A function that does one receive on `sock` and returns (data, size,
    address): `size` is the datagram size of a GRO-coalesced read (the
    last datagram may be shorter; split() cuts them apart), 0 when `data`
    is one datagram. recvmsg when the socket has it, else recvfrom() or
    recv(). Raises what recv raises. The daemons' receive loop
    (camex.io.udp.receive) takes this form: a whole BULK frame can then be
    handled without cutting it into datagrams first."""
    if hasattr(sock, "recvmsg"):
        recvmsg, space = sock.recvmsg, GRO_CMSG_SPACE
        if getattr(sock, "family", None) == socket.AF_INET6:
            return _canonical_receiver(recvmsg, bufsize, space)

        def recv():
            data, anc, _flags, addr = recvmsg(bufsize, space)
            if anc:
                c = anc[0]
                size = _GRO_INT(c[2])[0] & 0xFFFF if len(anc) == 1 and c[:2] == _GRO_KEY \
                    and len(c[2]) == 4 else gro_size(anc)
                if size and size < len(data):
                    return data, size, addr
            return data, 0, addr
        return recv
    if hasattr(sock, "recvfrom"):
        recvfrom = sock.recvfrom

        def recv_from():
            data, addr = recvfrom(bufsize)
            return data, 0, addr
        return recv_from
    plain = sock.recv

    def recv_plain():
        return plain(bufsize), 0, None
    return recv_plain


# Socket addresses remembered in their canonical form (and back): the
# first this many peers, then no more. A cached one saves 0.1-0.2 us per
# datagram; an entry costs ~300 bytes, which a fleet of thousands of
# cameras would pay per client (its memory bound is 4 KiB per client).
# Never emptied: a full cache costs no memory and no thrash, whoever
# filled it (forged sources included).
ENDPOINT_CACHE = 256


def _canonical_receiver(recvmsg, bufsize: int, space: int):
    """gro_receiver() for an AF_INET6 socket: the address comes back in its
    canonical form (camex.base.endpoint.canonical: an IPv4 peer of a
    dual-stack socket as (a.b.c.d, port), an IPv6 one without flowinfo
    and scope). A dict look-up per receive (~0.1 us, the same sender
    every time in a burst) instead of recomputing it, for the first
    ENDPOINT_CACHE senders."""
    cache: dict = {}
    get = cache.get

    def recv():
        data, anc, _flags, addr = recvmsg(bufsize, space)
        ep = get(addr)
        if ep is None:
            ep = canonical(addr)
            if len(cache) < ENDPOINT_CACHE:
                cache[addr] = ep
        if anc:
            c = anc[0]
            size = _GRO_INT(c[2])[0] & 0xFFFF if len(anc) == 1 and c[:2] == _GRO_KEY \
                and len(c[2]) == 4 else gro_size(anc)
            if size and size < len(data):
                return data, size, ep
        return data, 0, ep
    return recv


class _SockAddrs(dict):
    """canonical endpoint -> sockaddr for an AF_INET6 socket, called as a
    function. A remembered one is a dict look-up in C (no Python frame: a
    lone datagram's send runs cold after an idle sleep); the first
    ENDPOINT_CACHE are remembered."""

    __slots__ = ()
    __call__ = dict.__getitem__       # dict's own subscript: __missing__ below

    def __missing__(self, ep):
        addr = sockaddr_v6(ep)
        if len(self) < ENDPOINT_CACHE:
            self[ep] = addr
        return addr


def sockaddr_for(sock):
    """What a daemon passes to sendto() on `sock` for a canonical endpoint:
    None where the canonical form is the socket's own (AF_INET), else a
    caching camex.base.endpoint.sockaddr_v6 (AF_INET6, IPv4 peers mapped)."""
    if getattr(sock, "family", None) != socket.AF_INET6:
        return None
    return _SockAddrs()


def receiver(sock, bufsize: int = RECV_BUF):
    """Like gro_receiver(), but returns (datagrams, address): the read
    already split into its datagrams."""
    raw = gro_receiver(sock, bufsize)

    def recv():
        data, size, addr = raw()
        return (split(data, size) if size else (data,)), addr
    return recv


# ------------------------------------------------------------------ probe


class Features:
    """What the running kernel offers the data path (found by trying)."""

    def __init__(self, udp_gso: bool, udp_gro: bool):
        self.udp_gso = udp_gso
        self.udp_gro = udp_gro

    def __repr__(self):
        return f"Features(udp_gso={self.udp_gso}, udp_gro={self.udp_gro})"


def probe() -> Features:
    """Try UDP_SEGMENT and UDP_GRO on a throwaway socket (no traffic)."""
    if not sys.platform.startswith("linux"):
        return Features(False, False)
    # The options are UDP's, the same on AF_INET and AF_INET6 sockets.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 1400)
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
            gso = True
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            gso = False
        gro = enable_gro(s)
    finally:
        s.close()
    return Features(gso and not disabled("nogso"), gro and not disabled("nogro"))
