"""Datagram runs and frames cut over datagrams: pure framing, no syscall.

A `Run` is datagrams of one size glued in one buffer (what one UDP GSO send
carries); `runs` groups datagrams into such sends; `cut_frame`/`glue_frame`
spread one sealed frame over datagrams and `Reassembly` collects them again.
The sockets that send and receive them are camex.io.gso.
"""

from __future__ import annotations

import struct


# The kernel refuses more than UDP_MAX_SEGMENTS datagrams in one GSO send;
# that limit was 64 for years and is higher on recent kernels: 64 is safe.
MAX_SEGMENTS = 64
# One GSO send is one UDP datagram for the IP layer until it is segmented:
# its payload cannot exceed 65535 - 20 (IPv4) - 8 (UDP).
MAX_GSO_BYTES = 65507


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
    of 1472 bytes, 66,240, are more than 65,507 bytes: two sends). A Run
    within them is one send, its shorter last datagram included: 44 of
    1472 bytes and one of up to 739 (a BULK frame of a super-packet within
    the daemons' TSO cap, wire.bulk_tso_max) are one send, not 44 and 1
    (which arrive as two GRO reads, and the frame then needs reassembly)."""
    size, buf = r.size, r.buf
    n = len(buf)
    if n <= max_bytes and -(-n // size) <= limit:
        yield size, r
        return
    step = size * max(1, min(limit, max_bytes // size))
    mv = memoryview(buf)
    for i in range(0, len(buf), step):
        yield size, Run(mv[i:i + step], size)


def split(data, size: int):
    """The datagrams of one coalesced receive (memoryviews of `data`)."""
    n = len(data)
    if not size or size >= n:
        return [data]
    mv = memoryview(data)
    return [mv[i:i + size] for i in range(0, n, size)]


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
    chunks: list = [b""]
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
        self.last: tuple | None = None
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
