"""Property-based fuzzing of the daemon's BULK codec (camex.v2.wire) against
the layout of docs/V2-BULK.md, decoded here with struct: parse_bulk takes
exactly the fragments the layout allows and reads their fields, never
raising; bulk_header rebuilds what it read; BULK records survive a round
trip and parse_bulk_records agrees with a reading of the layout on any
bytes. CAMEX_FUZZ_EXAMPLES raises the number of examples (make
fuzz-parsers)."""

import os
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from camex.v2 import wire

N = int(os.environ.get("CAMEX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_fragment(d: bytes):
    """(flags, index, receiver, counter, count, slice) per the layout, or
    None: 20-byte header + a non-empty slice, type 6, count 1..64, index
    below count, bytes 17..19 zero."""
    if len(d) <= 20 or d[0] != 0xC2 or d[1] != 6:
        return None
    flags, index = d[2], d[3]
    receiver, counter = struct.unpack_from("<IQ", d, 4)
    count = d[16]
    if d[17:20] != b"\0\0\0" or not 1 <= count <= 64 or index >= count:
        return None
    return flags, index, receiver, counter, count, d[20:]


def spec_records(plain: bytes):
    """[(gso_size, packet)] per the layout (u16be L, u16be G, L bytes; L=0
    ends the list), or None when a record runs past the end or a stray
    1..3 bytes follow the last one."""
    out, pos = [], 0
    while len(plain) - pos >= 4:
        n, g = struct.unpack_from("!HH", plain, pos)
        if n == 0:
            return out
        if pos + 4 + n > len(plain):
            return None
        out.append((g, plain[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out if pos == len(plain) else None


@st.composite
def fragments(draw):
    """Header fields mostly in range, sometimes not, then a slice."""
    count = draw(st.one_of(st.integers(1, 64), st.integers(0, 255)))
    index = draw(st.one_of(st.integers(0, max(0, count - 1)), st.integers(0, 255)))
    head = struct.pack("<BBBBIQBBH", 0xC2, draw(st.sampled_from([6, 6, 6, 4, 7])),
                       draw(st.integers(0, 255)), index, draw(st.integers(0, 2**32 - 1)),
                       draw(st.integers(0, 2**64 - 1)), count,
                       draw(st.sampled_from([0, 0, 0, 1, 0x80])),
                       draw(st.sampled_from([0, 0, 0, 1, 0x8000])))
    return head + draw(st.binary(max_size=80))


@FUZZ
@given(st.one_of(fragments(), st.binary(max_size=60),
                 st.binary(max_size=60).map(lambda b: b"\xc2\x06" + b)))
@example(b"\xc2\x06" + bytes(18))                      # header only
@example(b"\xc2\x06\x00\x00" + bytes(12) + b"\x01\x00\x00\x00x")
def test_parse_bulk_is_the_layout(d):
    got = wire.parse_bulk(d)
    want = spec_fragment(d)
    if want is None:
        assert got is None
        return
    flags, index, receiver, counter, count, data = got
    assert (flags, index, receiver, counter, count, bytes(data)) == want
    head = bytearray(wire.bulk_header(receiver, counter, count, flags))
    head[3] = index
    assert bytes(head) == d[:wire.HEADER_BULK]


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 65535), st.binary(min_size=1, max_size=300)),
                max_size=6))
def test_bulk_records_round_trip(items):
    plain = wire.pack_bulk_records(items)
    assert [(g, bytes(p)) for g, p in wire.parse_bulk_records(plain)] == items
    # the end marker and padding after it change nothing
    assert [(g, bytes(p)) for g, p in wire.parse_bulk_records(plain + bytes(4) + b"pad")] == items


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.tuples(st.lists(st.tuples(st.integers(0, 65535),
                                              st.binary(min_size=1, max_size=50)), max_size=4),
                           st.binary(max_size=6))     # valid records, then a tail
                 .map(lambda t: wire.pack_bulk_records(t[0]) + t[1])))
@example(b"\x00\x05\x00\x00abc")     # a record past the end
@example(b"\x00\x01\x00\x00a\x00")   # a stray byte
def test_parse_bulk_records_is_the_layout(plain):
    got = wire.parse_bulk_records(plain)
    want = spec_records(plain)
    assert (None if got is None else [(g, bytes(p)) for g, p in got]) == want
