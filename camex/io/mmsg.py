"""recvmmsg(2) and sendmmsg(2): many datagrams, one syscall.

Python's socket module has neither. A server relaying for a camera fleet
receives one datagram from each of many senders and sends each to a
different client: without these, that is two syscalls and two Python
socket calls per datagram. Measured in process over loopback (docs/FASTPATH.md,
section 7): 64 datagrams of 1,243 bytes cost ~0.9 us each through one
recvmmsg against ~1.6 with recvmsg; sending them to 64 destinations ~3.0
against ~3.3 with sendto (the kernel's own work dominates).

Everything is allocated once per socket and reused across calls: the
mmsghdr, iovec and sockaddr arrays and the receive buffers (one anonymous
mapping, so slots that only ever hold small datagrams keep only their
first page resident). Datagrams received are memoryviews into those
buffers, valid until the next receive on the same Batch.

The calls go through camex.io.libc: cffi's C backend in a daemon with a
passphrase (`cryptography` has loaded it), ctypes in a plaintext one. The
arrays are bytearrays laid out with `struct` in the platform's native
alignment, the same for both.

`available()` says whether libc has both calls (glibc and musl do on
Linux); where it does not, the daemons keep their plain socket path.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct

from . import libc
from ..base.endpoint import sockaddr_v6

MSG_TRUNC = 0x20
MSG_DONTWAIT = 0x40
# Addresses kept converted, the first this many (as camex.io.gso's
# ENDPOINT_CACHE: per-client memory of a large fleet, no thrash).
CACHE = 256
SLOT = 65536         # a receive slot holds any UDP datagram (and a GRO batch)
NAME_LEN = 28        # sockaddr_in6, the larger of the two families
CONTROL_LEN = 32     # CMSG_SPACE(int): the UDP_GRO segment size of a GRO read
SOL_UDP, UDP_GRO = 17, 104


# The kernel's layouts in this platform's native alignment ('@': what the
# C compiler lays out; a trailing '0P' pads a struct to its alignment).
_MSGHDR = "PIPNPNi0P"   # name, namelen, iov, iovlen, control, controllen, flags
_MMSGHDR = struct.Struct("@" + _MSGHDR + "I0P")   # msghdr, msg_len
_IOVEC = struct.Struct("@PN")                     # iov_base, iov_len


def _offset(fields: str, index: int) -> int:
    """Where field `index` of a native struct format of one-letter codes starts."""
    return struct.calcsize("@" + fields[:index] + "0" + fields[index])


_MSZ = _MMSGHDR.size
_OFF_NAMELEN = _offset(_MSGHDR, 1)
_OFF_CONTROLLEN = _offset(_MSGHDR, 5)
_OFF_FLAGS = _offset(_MSGHDR, 6)
_OFF_LEN = _offset(_MSGHDR + "I", 9)
_IOV_LEN = _offset("PN", 1)
_ISZ = _IOVEC.size
_U32 = struct.Struct("=I")
_SIZE = struct.Struct("N")   # size_t, native


def _hdr_format() -> str:
    """One mmsghdr as a struct format reading msg_controllen, msg_flags
    and msg_len ('=': no alignment of its own, so n of them repeat it)."""
    fields = sorted([(_OFF_CONTROLLEN, "Q" if _SIZE.size == 8 else "I"),
                     (_OFF_FLAGS, "i"), (_OFF_LEN, "I")])
    fmt, at = "=", 0
    for off, code in fields:
        fmt += f"{off - at}x{code}" if off > at else code
        at = off + struct.calcsize("=" + code)
    return fmt + (f"{_MSZ - at}x" if _MSZ > at else "")


_HDR_FMT = _hdr_format()
_V4_NAME = f"!2xH4s{NAME_LEN - 8}x"   # sockaddr_in: family, port, address
_CMSG = struct.Struct("Nii")  # cmsghdr: cmsg_len, cmsg_level, cmsg_type
_INT = struct.Struct("i")

_loaded: dict = {}


def _load(backend: str | None = None):
    """(libc backend, recvmmsg, sendmmsg), or None where libc lacks them."""
    lib = libc.backend(backend)
    fns = _loaded.get(lib.name, 0)
    if fns == 0:
        try:
            fns = (lib, lib.function("recvmmsg", "iPIiP"),
                   lib.function("sendmmsg", "iPIi"))
        except (OSError, AttributeError):
            fns = None
        _loaded[lib.name] = fns
    return fns


def available() -> bool:
    """Does this libc offer recvmmsg and sendmmsg?"""
    return _load() is not None


def _ntop(family: int):
    """bytes of a sockaddr -> the canonical endpoint (camex.base.endpoint):
    (dotted quad, port) for an IPv4 peer, v4-mapped ones of a dual-stack
    socket included, (IPv6 text, port) for an IPv6 one ('%scope' kept for
    a link-local peer, whose reply could not leave without it)."""
    if family == socket.AF_INET:
        ntoa = socket.inet_ntoa

        def v4(name) -> tuple:
            return (ntoa(name[4:8]), (name[2] << 8) | name[3])
        return v4
    # sockaddr_in6: port and flow label in network order, scope id in host order.
    ntop, ntoa = socket.inet_ntop, socket.inet_ntoa
    unpack, scope_of = struct.Struct("!2xH4x16s").unpack_from, struct.Struct("=24xI").unpack_from
    v6, mapped = socket.AF_INET6, bytes(10) + b"\xff\xff"

    def v6name(name) -> tuple:
        port, addr = unpack(name)
        if addr[:12] == mapped:
            return (ntoa(addr[12:]), port)
        scope = scope_of(name)[0]
        host = ntop(v6, addr)
        return (f"{host}%{scope}", port) if scope else (host, port)
    return v6name


def _pton(family: int):
    """The address tuple -> bytes of a sockaddr (raises OSError or
    ValueError on one that does not fit the family)."""
    if family == socket.AF_INET:
        pack, aton = struct.Struct("=H2s4s8x").pack, socket.inet_aton
        fam = socket.AF_INET

        def v4(addr) -> bytes:
            return pack(fam, addr[1].to_bytes(2, "big"), aton(addr[0]))
        return v4
    pack6, pton = struct.Struct("=H2s4s16sI").pack, socket.inet_pton
    fam6, if_index = socket.AF_INET6, socket.if_nametoindex

    def v6(addr) -> bytes:
        # A canonical endpoint: an IPv4 peer of a dual-stack socket goes
        # v4-mapped; 'fe80::2%3' carries its scope. A 4-tuple as the socket
        # module gives it is taken as well.
        host = addr[0]
        flow = addr[2] if len(addr) > 2 else 0
        scope = addr[3] if len(addr) > 3 else 0
        if ":" not in host:
            host = "::ffff:" + host
        elif "%" in host:
            host, _, zone = host.partition("%")
            scope = int(zone) if zone.isdigit() else if_index(zone)
        return pack6(fam6, addr[1].to_bytes(2, "big"), flow.to_bytes(4, "big"),
                     pton(fam6, host), scope)
    return v6


class Batch:
    """Preallocated recvmmsg/sendmmsg state for one UDP socket.

    `recv()` -> [(memoryview, address, gro_size)], up to `size` reads
    (empty when none is waiting; raises OSError as recvfrom() would, for
    the first datagram only). `gro_size` is 0 for one datagram, else the
    datagram size of a UDP GRO read holding several (as
    camex.io.gso.gro_receiver says it). No datagram is longer than a
    slot (SLOT is the largest UDP payload); a truncated read (MSG_TRUNC,
    only with a smaller `slot`) is left out and counted in `truncated`.

    `send(pairs)` sends (datagram, address) pairs in as few sendmmsg calls
    as it can. An error on one datagram costs that datagram only: it goes
    to `on_error(exc, address)`, except a full buffer (EAGAIN) and a
    pending ICMP error of an earlier send (ECONNREFUSED, retried once
    since the datagram itself did not leave), and the rest of the batch is
    sent. Datagrams bigger than `send_slot` or whose address does not fit
    the socket's family go through sendto() one by one.

    `backend` names camex.io.libc's backend ('cffi' or 'ctypes'; by
    default cffi's where it is loaded).
    """

    def __init__(self, sock: socket.socket, size: int = 64, slot: int = SLOT,
                 send_slot: int = 2048, on_error=None, backend: str | None = None):
        fns = _load(backend)
        if fns is None:
            raise OSError(errno.ENOSYS, "libc has no recvmmsg/sendmmsg")
        lib, self._recvmmsg, self._sendmmsg = fns
        self._errno = lib.errno
        self.sock = sock
        self.fd = sock.fileno()
        self.size = size
        self.slot = slot
        self.send_slot = send_slot
        self.on_error = on_error
        self.truncated = 0
        self.sends = 0   # sendmmsg/sendto calls (status, benchmarks)
        self.calls = self.received = 0   # recvmmsg calls that returned reads, reads
        self._ntop = _ntop(sock.family)
        self._pton = _pton(sock.family)
        self._names: dict = {}    # address tuple -> sockaddr bytes (send side)
        self._v4 = sock.family == socket.AF_INET
        self._ips: dict = {}      # 4 address bytes -> the text form (receive side)
        self._hdr_fmt: dict = {}  # n -> struct of n mmsghdrs
        self._name_fmt: dict = {}
        self._one_name = _V4_NAME
        # Receive side: buffers in an anonymous mapping (resident only where
        # written), sockaddrs and iovecs pointing into them. Each array is a
        # bytearray (memoryviews on them: never resized, never moved).
        # MAP_PRIVATE: mmap's default, MAP_SHARED, is shared memory, whose
        # pages MADV_DONTNEED only unmaps (release() would free nothing).
        self._rbuf = mmap.mmap(-1, size * slot, flags=mmap.MAP_PRIVATE)
        self._rmv = memoryview(self._rbuf)
        rbase = lib.address(self._rbuf)
        self._rnames = bytearray(size * NAME_LEN)
        self._rnmv = memoryview(self._rnames)
        self._riov = bytearray(size * _ISZ)
        self._rmsgs = bytearray(size * _MSZ)
        self._rctl = bytearray(size * CONTROL_LEN)
        self._rcmv = memoryview(self._rctl)
        nbase, cbase = lib.address(self._rnames), lib.address(self._rctl)
        ibase = lib.address(self._riov)
        for i in range(size):
            _IOVEC.pack_into(self._riov, i * _ISZ, rbase + i * slot, slot)
            _MMSGHDR.pack_into(self._rmsgs, i * _MSZ, nbase + i * NAME_LEN, NAME_LEN,
                               ibase + i * _ISZ, 1, cbase + i * CONTROL_LEN, CONTROL_LEN, 0, 0)
        self._rmmv = memoryview(self._rmsgs)
        self._rptr = lib.pointer(lib.address(self._rmsgs))
        self._null = lib.pointer(0)   # (no timeout)
        # The kernel writes lengths and flags back into the headers it
        # used: one slice assignment from this copy restores them before the
        # next call.
        self._rtemplate = bytes(self._rmmv)
        self._used = 0
        # Send side: datagrams are copied into slots of one buffer (a copy
        # of ~1.2 KB costs less than pinning each bytes object).
        self._sbuf = bytearray(size * send_slot)
        self._smv = memoryview(self._sbuf)
        self._snames = bytearray(size * NAME_LEN)
        self._snmv = memoryview(self._snames)
        self._siov = bytearray(size * _ISZ)
        self._smsgs = bytearray(size * _MSZ)
        sbase, snbase = lib.address(self._sbuf), lib.address(self._snames)
        ibase = lib.address(self._siov)
        for i in range(size):
            _IOVEC.pack_into(self._siov, i * _ISZ, sbase + i * send_slot, 0)
            _MMSGHDR.pack_into(self._smsgs, i * _MSZ, snbase + i * NAME_LEN, 0,
                               ibase + i * _ISZ, 1, 0, 0, 0, 0)
        self._simv = memoryview(self._siov)
        self._smmv = memoryview(self._smsgs)
        sptr = lib.address(self._smsgs)
        self._sptrs = [lib.pointer(sptr + i * _MSZ) for i in range(size)]

    # ------------------------------------------------------------ receive

    def recv(self) -> list:
        size, mm = self.size, self._rmmv
        if self._used:
            k = self._used * _MSZ
            mm[:k] = self._rtemplate[:k]
            self._used = 0
        n = self._recvmmsg(self.fd, self._rptr, size, MSG_DONTWAIT, self._null)
        if n < 0:
            e = self._errno()
            if e in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            raise OSError(e, errno.errorcode.get(e, str(e)))
        self._used = n
        self.calls += 1
        self.received += n
        # Lengths, flags and the sockaddrs of all n in two C calls.
        hdr = self._hdr_fmt.get(n)
        if hdr is None:
            hdr = self._hdr_fmt[n] = struct.Struct(_HDR_FMT[0] + _HDR_FMT[1:] * n)
            self._name_fmt[n] = struct.Struct(self._one_name[0] + self._one_name[1:] * n)
        h = iter(hdr.unpack_from(mm))
        out = []
        append, buf, slot = out.append, self._rmv, self.slot
        if self._v4:
            nv = iter(self._name_fmt[n].unpack_from(self._rnmv))
            ips, ntoa = self._ips, socket.inet_ntoa
            for (ctl, flags, length), (port, a), i in zip(zip(h, h, h), zip(nv, nv), range(n)):
                if flags & MSG_TRUNC:
                    self.truncated += 1
                    continue
                ip = ips.get(a)
                if ip is None:
                    ip = ntoa(a)
                    if len(ips) < CACHE:   # the first CACHE senders (gso.ENDPOINT_CACHE)
                        ips[a] = ip
                o = i * slot
                append((buf[o:o + length], (ip, port),
                        self._gro_size(i, length) if ctl else 0))
            return out
        names, ntop = self._rnmv, self._ntop
        for (ctl, flags, length), i in zip(zip(h, h, h), range(n)):
            if flags & MSG_TRUNC:
                self.truncated += 1
                continue
            o = i * slot
            append((buf[o:o + length], ntop(names[i * NAME_LEN:(i + 1) * NAME_LEN]),
                    self._gro_size(i, length) if ctl else 0))
        return out

    def _gro_size(self, i: int, length: int) -> int:
        clen, level, ctype = _CMSG.unpack_from(self._rcmv, i * CONTROL_LEN)
        if level == SOL_UDP and ctype == UDP_GRO and clen >= _CMSG.size + 4:
            size = _INT.unpack_from(self._rcmv, i * CONTROL_LEN + _CMSG.size)[0]
            if 0 < size < length:
                return size
        return 0

    # --------------------------------------------------------------- send

    def _name(self, addr) -> bytes:
        names = self._names
        name = names.get(addr)
        if name is None:
            name = self._pton(addr)
            if len(names) < CACHE:
                names[addr] = name
        return name

    def send(self, pairs) -> None:
        size, slot = self.size, self.send_slot
        sbuf, snames, iov, mm = self._smv, self._snmv, self._simv, self._smmv
        pack_size, pack_u32 = _SIZE.pack_into, _U32.pack_into
        n = 0
        addrs = []
        for d, addr in pairs:
            length = len(d)
            try:
                if length > slot:
                    raise ValueError
                name = self._name(addr)
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                if n:   # (what came before it leaves first: order is kept)
                    self._flush(n, addrs)
                    n = 0
                    addrs = []
                self._sendto(d, addr)
                continue
            o = n * slot
            sbuf[o:o + length] = d
            pack_size(iov, n * _ISZ + _IOV_LEN, length)
            no = n * NAME_LEN
            snames[no:no + len(name)] = name
            pack_u32(mm, n * _MSZ + _OFF_NAMELEN, len(name))
            addrs.append(addr)
            n += 1
            if n == size:
                self._flush(n, addrs)
                n = 0
                addrs = []
        if n:
            self._flush(n, addrs)

    def _flush(self, n: int, addrs: list) -> None:
        start, retried = 0, -1
        sendmmsg, fd, ptrs = self._sendmmsg, self.fd, self._sptrs
        while start < n:
            self.sends += 1
            r = sendmmsg(fd, ptrs[start], n - start, MSG_DONTWAIT)
            if r > 0:
                start += r
                continue
            e = self._errno()
            if e == errno.EINTR:
                continue
            if e == errno.ECONNREFUSED and retried != start:
                # An ICMP error of an earlier datagram, reported now: this
                # one did not leave. Once more, then it counts as dropped.
                retried = start
                continue
            if e not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED) \
                    and self.on_error is not None:
                self.on_error(OSError(e, errno.errorcode.get(e, str(e))), addrs[start])
            start += 1      # that datagram is dropped, the rest go on

    def _sendto(self, d, addr) -> None:
        self.sends += 1
        try:
            self.sock.sendto(d, addr if self._v4 else sockaddr_v6(addr))
        except (BlockingIOError, ConnectionRefusedError):
            pass
        except OSError as e:
            if self.on_error is not None:
                self.on_error(e, addr)

    def release(self) -> None:
        """Give the receive slots' pages back to the system (the daemon is
        idle: no datagram view is alive). A burst of GRO reads leaves up to
        size x 64 KiB resident; the next reads fault in only what they
        write."""
        try:
            self._rbuf.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):   # no madvise: keep them
            pass

    def close(self) -> None:
        try:
            self._rmv.release()
            self._rbuf.close()
        except BufferError:
            pass    # a datagram view is still alive: the GC frees the mapping
