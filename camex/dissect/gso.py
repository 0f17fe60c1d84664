"""UDP GSO sends in captures, for camex-dissect.

The camex daemons hand the kernel many datagrams in one sendmsg (UDP GSO,
camex/io/gso.py): equal-sized datagrams to one peer - DATA or BULK
fragments of v2, legacy encrypted or plaintext datagrams - each S bytes,
the last one possibly shorter. The kernel cuts them late: a capture taken
on the sending host, or on a veth (the skb crosses it whole), shows ONE
UDP datagram of up to 64 KiB holding them back to back. A pcap does not
record the segment size S, so it is found from the content: every
datagram of a run starts with a header whose fixed bytes repeat at each
multiple of S. Only runs whose every segment starts so are cut, so a
single datagram is never split by a chance match inside its ciphertext
(odds about 2^-48 per byte position for v2, 2^-64 for legacy).

`split(datagram)` returns the datagrams of a run (camex.dissect.capture.Datagram,
`gso` = (segment, segments, S)), or [datagram] unchanged.
"""

from __future__ import annotations

import dataclasses

from camex.legacy import codec
from camex.v2 import wire


def _cut(data: bytes, size: int, starts, whole, complete: bool) -> list | None:
    """`data` cut every `size` bytes, if every piece starts like a datagram
    of the run (`starts(at)`: the bytes all its datagrams share) and is a
    whole one (`whole(at, length)`); the last piece of a truncated capture
    (`complete` False) only has to start like one."""
    n = len(data)
    if not 0 < size < n:
        return None
    cuts = range(0, n, size)
    if not all(starts(c) for c in cuts[1:]):
        return None
    if not all(whole(c, size) for c in cuts[:-1]):
        return None
    if complete and not whole(cuts[-1], n - cuts[-1]):
        return None
    return [data[c:c + size] for c in cuts]


_V2_TYPES = (wire.T_INIT, wire.T_RESP, wire.T_COOKIE, wire.T_DATA, wire.T_NOSESSION,
             wire.T_BULK)


def v2_split(data: bytes, complete: bool = True, opens=None) -> list | None:
    """v2 DATA and BULK datagrams glued by GSO: the same receiver index
    (bytes 4-7) at every multiple of S, after the mark and a DATA or BULK
    type, reserved bytes zero. The two types mix in one run: a daemon's
    batch holds a peer's BULK fragments and DATA together, and runs()
    groups datagrams by size only. `opens(datagram) -> bool` (a key log's
    DATA opener, if the dissector has one) admits a run whose last
    datagram is another message (_opened_run)."""
    n = len(data)
    types = (wire.T_DATA, wire.T_BULK)
    smallest = wire.HEADER_BULK + 1     # a BULK fragment of one byte; DATA is longer
    if n < 2 * smallest or data[0] != wire.MARK or data[1] not in types:
        return None
    receiver = data[4:8]

    def starts(at):
        return data[at] == wire.MARK and data[at + 1] in types and \
            data[at + 4:at + 8] == receiver

    def whole(at, length):
        if data[at + 1] == wire.T_BULK:
            return length > wire.HEADER_BULK and data[at + 17:at + 20] == b"\0\0\0"
        return length >= wire.DATA_MIN and data[at + 3] == 0

    at = data.find(receiver, smallest + 4)
    while at != -1:
        size = at - 4
        if starts(size):
            segs = _cut(data, size, lambda c: n - c >= 8 and starts(c), whole, complete)
            if segs is not None:
                return segs
        at = data.find(receiver, at + 1)
    if opens is not None and data[1] == wire.T_DATA:
        return _opened_run(data, opens, starts, whole)
    return None


def _opened_run(data: bytes, opens, starts, whole) -> list | None:
    """A run whose last datagram is another message: at a rekey a client
    sends DATA and its INIT (or the new session's first DATA) to the same
    address, and runs() groups by size only, so nothing but the first
    datagram's receiver marks the cut. A cut at S is taken only when the
    key log opens the first S bytes as DATA (a forgery cannot), the
    datagrams up to the last start like the first, and the last, at most
    S long, starts with the mark and a v2 type."""
    n = len(data)
    at = data.find(wire.MARK, wire.DATA_MIN)
    while at != -1 and at < n - 1:
        size = at
        last = (n - 1) // size * size
        if wire.NOSESSION_LEN <= n - last <= size and data[last] == wire.MARK \
                and data[last + 1] in _V2_TYPES \
                and all(starts(c) and whole(c, size) for c in range(size, last, size)) \
                and opens(data[:size]):
            return [data[c:c + size] for c in range(0, n, size)]
        at = data.find(wire.MARK, at + 1)
    return None


def legacy_split(data: bytes, complete: bool = True) -> list | None:
    """Legacy encrypted datagrams glued by GSO: the header's length field
    gives S; magic and sender prefix repeat at every multiple of S."""
    if len(data) <= codec.OVERHEAD_ENC or data[:4] != codec.MAGIC:
        return None
    prefix = data[5:9]
    size = int.from_bytes(data[17:19], "big") + codec.OVERHEAD_ENC

    def starts(at):
        return data[at:at + 4] == codec.MAGIC and data[at + 5:at + 9] == prefix

    def whole(at, length):
        return (length >= codec.OVERHEAD_ENC
                and int.from_bytes(data[at + 17:at + 19], "big") + codec.OVERHEAD_ENC == length)

    return _cut(data, size, starts, whole, complete)


def plain_split(data: bytes, complete: bool = True) -> list | None:
    """Plaintext legacy datagrams (bare IPv4 packets) glued by GSO: the
    first packet's total length gives S; every piece is an IPv4 header
    with the same addresses whose total length is the piece's size."""
    n = len(data)
    if n < 40 or data[0] >> 4 != 4:
        return None
    size = int.from_bytes(data[2:4], "big")
    addrs = data[12:20]

    def starts(at):
        return n - at >= 20 and data[at] >> 4 == 4 and data[at + 12:at + 20] == addrs

    def whole(at, length):
        return length >= 20 and int.from_bytes(data[at + 2:at + 4], "big") == length

    if size < 20:
        return None
    return _cut(data, size, starts, whole, complete)


def split(d, plaintext_port: bool = False, opens=None) -> list:
    """The datagrams of capture Datagram `d`: one per GSO segment if it
    holds a run (plaintext IPv4 runs only on a camex port), else [d].
    `opens`: see v2_split."""
    data = bytes(d.payload)
    first = data[:1]
    segs = None
    if first == b"\xc2":
        segs = v2_split(data, d.complete, opens)
    elif first == b"C":
        segs = legacy_split(data, d.complete)
    elif plaintext_port and first and data[0] >> 4 == 4:
        segs = plain_split(data, d.complete)
    if not segs:
        return [d]
    size, n = len(segs[0]), len(segs)
    return [dataclasses.replace(d, payload=seg, gso=(k, n, size),
                                udp_length=d.udp_length - k * size if k == n - 1 else size,
                                complete=d.complete or k < n - 1)
            for k, seg in enumerate(segs)]
