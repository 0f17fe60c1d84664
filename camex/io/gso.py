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
No I/O happens at import time; nothing here knows about camex framing.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys

SOL_UDP = 17
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)

# The kernel refuses more than UDP_MAX_SEGMENTS datagrams in one GSO send;
# that limit was 64 for years and is higher on recent kernels: 64 is safe.
MAX_SEGMENTS = 64
# One GSO send is one UDP datagram for the IP layer until it is segmented:
# its payload cannot exceed 65535 - 20 (IPv4) - 8 (UDP).
MAX_GSO_BYTES = 65507
# Room for the largest coalesced read plus its control message.
RECV_BUF = 65536 + 4096
GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 64

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


# ------------------------------------------------------------- UDP GSO/GRO


class Run:
    """Datagrams of `size` bytes glued in one buffer (the last one may be
    shorter): what one UDP GSO send carries. A core puts a sealed BULK
    frame in its outbox this way (glue_frame), so that no datagram object
    is made for it: the Sender hands the buffer to the kernel, which cuts
    it (UDP_SEGMENT). datagrams_of() cuts it for whoever needs datagrams."""

    __slots__ = ("buf", "size")

    def __init__(self, buf, size: int):
        self.buf = buf
        self.size = size

    def datagrams(self) -> list:
        return split(self.buf, self.size) if len(self.buf) > self.size else [self.buf]

    def __repr__(self):
        return f"Run({len(self.buf)} bytes in datagrams of {self.size})"


def datagrams_of(items) -> list:
    """`items` (datagrams and Runs) as datagrams, order kept."""
    out = []
    for d in items:
        if type(d) is Run:
            out += d.datagrams()
        else:
            out.append(d)
    return out


def runs(datagrams, limit: int = MAX_SEGMENTS, max_bytes: int = MAX_GSO_BYTES):
    """Cut a list of datagrams into GSO-sendable runs, order kept.

    A run is datagrams of one size, optionally ended by one shorter datagram,
    at most `limit` long and `max_bytes` in total. Yields (size, [datagrams]).
    """
    run: list = []
    size = total = 0
    for d in datagrams:
        if type(d) is Run:
            if run:
                yield size, run
                run, size, total = [], 0, 0
            yield from _pieces(d, limit, max_bytes)
            continue
        n = len(d)
        if run and (n != size or len(run) >= limit or total + n > max_bytes):
            if n < size and len(run) < limit and total + n <= max_bytes:
                run.append(d)  # a shorter tail closes the run
                yield size, run
                run, size, total = [], 0, 0
                continue
            yield size, run
            run, size, total = [], 0, 0
        if not run:
            size = n
        run.append(d)
        total += n
    if run:
        yield size, run


def _pieces(r: Run, limit: int, max_bytes: int):
    """A Run as (size, Run) sends within one send's limits (45 datagrams
    of 1472 bytes, 66,240, are more than 65,507 bytes: two sends)."""
    size, buf = r.size, r.buf
    step = size * max(1, min(limit, max_bytes // size))
    if len(buf) <= step:
        yield size, r
        return
    mv = memoryview(buf)
    for i in range(0, len(buf), step):
        yield size, Run(mv[i:i + step], size)


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


def split(data, size: int):
    """The datagrams of one coalesced receive (memoryviews of `data`)."""
    n = len(data)
    if not size or size >= n:
        return [data]
    mv = memoryview(data)
    return [mv[i:i + size] for i in range(0, n, size)]


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

    def __init__(self, sock, gso: bool, on_error=None):
        self.sock = sock
        self.gso = gso and hasattr(sock, "sendmsg")
        self.on_error = on_error
        self.sends = 0  # syscalls, for status and benchmarks
        self.fallback_reason = None
        # Largest datagram GSO may carry: GSO cannot IP-fragment, so
        # datagrams above the path MTU (EMSGSIZE) go one by one and the
        # kernel fragments each, as without GSO.
        self.max_size = 65535

    def send(self, datagrams, addr=None) -> None:
        if not self.gso:
            self._one_by_one(datagrams, addr)
            return
        for size, run in runs(datagrams):
            if size > self.max_size and _many(run):
                self._one_by_one(run, addr)
                continue
            self.sends += 1
            try:
                send_gso(self.sock, run, size, addr)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            except OSError as e:
                if _many(run) and e.errno == errno.EMSGSIZE:
                    self.max_size = size - 1
                    self._one_by_one(run, addr)
                elif _many(run) and e.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT,
                                                errno.EOPNOTSUPP):
                    self.gso = False
                    self.fallback_reason = f"UDP GSO refused ({e.strerror}), sending one by one"
                    self._one_by_one(run, addr)
                elif self.on_error is not None:
                    self.on_error(e, addr)

    def send_grouped(self, pairs) -> None:
        """(datagram, address) pairs, batched per address (order kept per
        address; different addresses are independent flows anyway)."""
        if not self.gso or (len(pairs) == 1 and type(pairs[0][0]) is not Run):
            for d, addr in pairs:
                self._one_by_one((d,), addr)
            return
        groups: dict = {}
        for d, addr in pairs:
            g = groups.get(addr)
            if g is None:
                groups[addr] = [d]
            else:
                g.append(d)
        for addr, ds in groups.items():
            self.send(ds, addr)

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

        def recv():
            data, anc, _flags, addr = recvmsg(bufsize, space)
            if anc:
                size = gro_size(anc)
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


def disabled(word: str) -> bool:
    """True if $CAMEX_FASTPATH (comma-separated) names `word` or "off":
    a switch for benchmarks and for ruling the fast path out when a bug
    is suspected, e.g. CAMEX_FASTPATH=nogso,notso."""
    words = os.environ.get("CAMEX_FASTPATH", "").replace(" ", "").split(",")
    return word in words or "off" in words


def probe() -> Features:
    """Try UDP_SEGMENT and UDP_GRO on a throwaway socket (no traffic)."""
    if not sys.platform.startswith("linux"):
        return Features(False, False)
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


# ------------------------------------------- frames cut into GSO datagrams
#
# Transport-level help for a framing that seals a whole super-packet once and
# spreads it over several datagrams (the BULK proposal, notes/fastpath-v2.md):
# the sender cuts, the receiver glues. Nothing here knows the header layout
# beyond "byte 3 is the fragment index"; the protocol module owns the rest.

INDEX_AT = 3  # offset of the fragment index in a fragment header


def cut_frame(header, body, size: int) -> list:
    """Datagrams of `size` bytes (the last one shorter) carrying `body`,
    each led by `header` with byte INDEX_AT set to its index.

    `header` is the fragment header with index 0 (bytes). The result is
    one GSO run: pass it to Sender.send() as is. Raises ValueError if the
    frame would need more than MAX_SEGMENTS datagrams."""
    room, n = _fragments(len(header), len(body), size)
    mv = memoryview(body)
    h = bytearray(header)
    out = []
    for i in range(n):
        h[INDEX_AT] = i
        out.append(bytes(h) + mv[i * room:(i + 1) * room])
    return out


def _fragments(hl: int, body_len: int, size: int):
    """(room per datagram, datagrams) for a frame body of `body_len` bytes
    behind `hl`-byte headers; ValueError if it cannot be cut."""
    room = size - hl
    if room <= 0:
        raise ValueError("datagram size leaves no room after the header")
    n = -(-body_len // room) or 1
    if n > MAX_SEGMENTS:
        raise ValueError(f"frame of {body_len} bytes needs {n} datagrams (max {MAX_SEGMENTS})")
    return room, n


def glue_frame(header, body, size: int) -> Run:
    """cut_frame(), glued: the same datagrams as one Run (one buffer, no
    object per datagram; the kernel cuts it at send). The slices are cut
    by one struct call and joined with `header` between them; the index
    bytes are then set with one slice assignment."""
    room, n = _fragments(len(header), len(body), size)
    k = n - 1
    chunks = [b""]
    if k:
        chunks += repeated_struct(f"{room}s", k).unpack_from(body)
    chunks.append(memoryview(body)[k * room:])
    buf = bytearray(header).join(chunks)
    buf[INDEX_AT::size] = INDEX_BYTES[n]
    return Run(buf, size)


# INDEX_BYTES[n]: the index bytes of a frame of n fragments, in order (what
# a strided slice of a glued or GRO-read frame at INDEX_AT holds).
INDEX_BYTES = [bytes(range(n)) for n in range(MAX_SEGMENTS + 1)]
_STRUCTS: dict = {}


def repeated_struct(unit: str, n: int) -> struct.Struct:
    """struct.Struct(unit * n), cached (a path has one datagram size, so
    few are ever made): one C call then cuts or gathers the `n` pieces of
    a frame (glue_frame here, camex.v2.bulk's whole-frame read)."""
    key = (unit, n)
    st = _STRUCTS.get(key)
    if st is None:
        if len(_STRUCTS) >= 256:
            _STRUCTS.clear()
        st = _STRUCTS[key] = struct.Struct(unit * n)
    return st


def _slices(buf, size: int, n: int) -> list:
    """The first `n` slices of `size` bytes of an in-order frame buffer."""
    return [bytes(buf[i * size:(i + 1) * size]) for i in range(n)]


class Reassembly:
    """Slots that collect the fragments of frames until each is complete.

    Keyed by whatever identifies a frame (e.g. (receiver, counter)); a
    fragment brings its index and the frame's fragment count. Bounded: at
    most `max_slots` frames open, the oldest dropped first; at most
    `per_group` of them for one group (the first item of a tuple key, e.g.
    one session), so one sender cannot take every slot; a slot older than
    `timeout` seconds is dropped when the next fragment arrives. A fragment
    that disagrees with its slot (another count, an index out of range)
    discards the slot: it cannot be the same frame.

    Fragments that arrive in order (the usual case: a GRO batch holds a
    whole frame) are appended to one bytearray, one copy each, and that
    bytearray is the result; out of order, each is kept until the frame is
    complete and joined then. Only copies are kept, never the caller's
    buffers (a receive buffer may be reused).

    Fragments are not authenticated, the frame is: anyone who knows a
    frame's key can send a fragment of it first. So a fragment that
    differs from the one held at its index replaces it (the sender's own
    comes after a forgery sent ahead of it), and a frame that the caller
    finds forged (`forged(key)`) is kept for MEND_TRIES more completions:
    a later fragment that replaces one of it completes it again. An
    exact copy of a held fragment is a duplicate and changes nothing.
    """

    MEND_TRIES = 2

    def __init__(self, max_slots: int = 32, timeout: float = 1.0, per_group: int | None = None):
        self.max_slots = max_slots
        self.timeout = timeout
        self.per_group = per_group
        # key -> [created, count, parts (list, or None while in order), have,
        #         buf, size of the first slice, mends left]
        self.slots: dict = {}
        self.groups: dict = {}  # group -> open slots
        self.dropped = 0
        # (key, slot) of the frame that arrives in order right now: a
        # protocol's per-fragment fast path appends to slot[4] directly
        # (camex.v2.bulk.FastReceiver), add() does the rest.
        self.last = None
        self._done = None       # (key, slot) of the frame add() completed last

    def add(self, key, index: int, count: int, payload, now: float):
        """Store one fragment; the frame's payload (bytes or bytearray)
        once complete, else None."""
        if not 0 <= index < count:
            self._drop(key)
            return None
        if count == 1:
            return bytes(payload)
        slot = self.slots.get(key)
        if slot is not None and (slot[1] != count or now - slot[0] > self.timeout):
            self._drop(key)
            self.dropped += 1
            slot = None
        if slot is None:
            if index == 0:
                slot = [now, count, None, 1, bytearray(payload), len(payload), self.MEND_TRIES]
                self._open(key, slot, now)
                self.last = (key, slot)
                return None
            slot = [now, count, [None] * count, 0, None, 0, self.MEND_TRIES]
            self._open(key, slot, now)
        parts = slot[2]
        if parts is None:
            have = slot[3]
            if index == have:
                slot[4] += payload
                slot[3] = have + 1
                if have + 1 < count:
                    return None
                return self._complete(key, slot, slot[4])
            size = slot[5]
            if index < have and slot[4][index * size:index * size + size] == payload:
                return None  # a duplicate
            # Out of order, or another fragment where one is held: keep the
            # slices apart from now on. Slices before the last all have the
            # size of the first.
            parts = slot[2] = _slices(slot[4], size, have) + [None] * (count - have)
            slot[4] = None
            if self.last is not None and self.last[1] is slot:
                self.last = None
        held = parts[index]
        if held is None:
            parts[index] = bytes(payload)
            slot[3] += 1
        elif held == payload:
            return None  # a duplicate
        else:
            parts[index] = bytes(payload)
            if slot[3] == count:            # a forged frame, mended: try it again
                return self._complete(key, slot, b"".join(parts))
        if slot[3] < count:
            return None
        return self._complete(key, slot, b"".join(parts))

    def _complete(self, key, slot, whole):
        self._drop(key)
        self._done = (key, slot)
        return whole

    def forged(self, key) -> None:
        """The frame add() just returned for `key` did not authenticate:
        keep its fragments (MEND_TRIES times) so that a genuine one sent
        after a forgery can still complete it."""
        done, self._done = self._done, None
        if done is None or done[0] != key or done[1][6] <= 0 or key in self.slots:
            return
        slot = done[1]
        slot[6] -= 1
        if slot[2] is None:
            buf, size, count = slot[4], slot[5], slot[1]
            slot[2] = _slices(buf, size, count - 1) + [bytes(buf[(count - 1) * size:])]
            slot[4] = None
        self._open(key, slot, slot[0])

    def _open(self, key, slot, now: float) -> None:
        """Make room for a slot and keep it (counted in its group)."""
        self._make_room(key, now)
        self.slots[key] = slot
        g = self._group(key)
        if g is not None:
            self.groups[g] = self.groups.get(g, 0) + 1

    def _group(self, key):
        return key[0] if self.per_group is not None and type(key) is tuple else None

    def _drop(self, key) -> None:
        last = self.last
        if last is not None and last[0] == key:
            self.last = None
        if self.slots.pop(key, None) is not None:
            g = self._group(key)
            if g is not None:
                n = self.groups.get(g, 0) - 1
                if n > 0:
                    self.groups[g] = n
                else:
                    self.groups.pop(g, None)

    def _make_room(self, key, now: float) -> None:
        g = self._group(key)
        if g is not None and self.groups.get(g, 0) >= self.per_group:
            # This sender's oldest frame makes room for its newest.
            for k in self.slots:
                if self._group(k) == g:
                    self._drop(k)
                    self.dropped += 1
                    break
        if len(self.slots) < self.max_slots:
            return
        stale = [k for k, s in self.slots.items() if now - s[0] > self.timeout]
        for k in stale:
            self._drop(k)
        self.dropped += len(stale)
        while len(self.slots) >= self.max_slots:
            # dicts keep insertion order: the first is the oldest
            self._drop(next(iter(self.slots)))
            self.dropped += 1

    def memory(self) -> int:
        """Bytes held in open slots (for tests and status)."""
        n = 0
        for s in self.slots.values():
            n += len(s[4]) if s[2] is None else sum(len(p) for p in s[2] if p is not None)
        return n
