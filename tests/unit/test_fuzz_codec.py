"""Property-based fuzzing of the daemon's codec (camex.legacy.codec).

Every parser gets arbitrary and near-valid input; it may only refuse with
CodecError (or InvalidTag for authentication), never crash otherwise, and
what it accepts must be consistent with the spec. CAMEX_FUZZ_EXAMPLES raises
the number of examples for long runs (make fuzz-parsers).
"""

import os
import struct

from cryptography.exceptions import InvalidTag
from camex.base.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from camex.legacy import codec

N = int(os.environ.get("CAMEX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AEAD = ChaCha20Poly1305(codec.derive_key(b"fuzz-pass"))

prefixes = st.binary(min_size=4, max_size=4)
seqs = st.integers(0, 2**64 - 1)
types = st.sampled_from([codec.T_REGISTER, codec.T_DATA, codec.T_CONFIG])


@st.composite
def near_datagrams(draw):
    """A valid datagram, then a few byte edits, truncations or extensions."""
    buf = bytearray(codec.seal(AEAD, draw(types), draw(prefixes), draw(seqs),
                               draw(st.binary(max_size=200))))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "add", "set"]))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del buf[pos:pos + draw(st.integers(1, 20))]
        elif op == "add":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
    return bytes(buf)


datagrams = st.one_of(st.binary(max_size=300), near_datagrams(),
                      st.binary(max_size=60).map(lambda b: b"CX2P" + b))


@FUZZ
@given(datagrams)
@example(b"")
@example(b"CX2P")
@example(b"CX2P\x02" + b"\0" * 38)
def test_parse_header_refuses_cleanly_or_is_consistent(buf):
    try:
        h = codec.parse_header(buf)
    except codec.CodecError:
        return
    assert buf[:4] == codec.MAGIC
    assert len(buf) == h.length + codec.OVERHEAD_ENC
    assert h.type in codec.TYPE_NAMES and len(h.prefix) == 4
    assert struct.unpack("!Q", buf[9:17])[0] == h.seq == struct.unpack("!Q", buf[19:27])[0]
    assert codec.pack_header(h.type, h.prefix, h.seq, h.length) == bytes(buf[:27])
    assert codec.looks_encrypted(buf)


@FUZZ
@given(datagrams)
def test_open_datagram_only_invalid_tag_or_codec_error(buf):
    try:
        pt = codec.open_datagram(AEAD, buf)
    except (codec.CodecError, InvalidTag):
        return
    # accepted: only an unmodified datagram of ours can get here
    h = codec.parse_header(buf)
    assert len(pt) == h.length
    assert codec.seal(AEAD, h.type, h.prefix, h.seq, pt) == bytes(buf)


@FUZZ
@given(types, prefixes, seqs, st.binary(max_size=2000))
def test_seal_open_round_trip(ptype, prefix, seq, pt):
    wire = codec.seal(AEAD, ptype, prefix, seq, pt)
    assert len(wire) == len(pt) + 43
    h = codec.parse_header(wire)
    assert (h.type, h.prefix, h.seq, h.length) == (ptype, prefix, seq, len(pt))
    assert codec.open_datagram(AEAD, wire) == pt


@FUZZ
@given(datagrams, st.binary(min_size=1, max_size=57))
def test_other_key_never_opens(buf, passphrase):
    other = ChaCha20Poly1305(codec.derive_key(passphrase + b"-other"))
    try:
        codec.open_datagram(other, buf)
    except (codec.CodecError, InvalidTag):
        return
    raise AssertionError("a datagram opened with a key it was not sealed with")


control_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=" =\nABCX2PREGISTERMODE=AUTO.0123456789_:-\x00\xff", max_size=120)
      .map(lambda t: ("CX2P " + t).encode("utf-8", "surrogateescape")),
    st.binary(min_size=1020, max_size=1030).map(lambda b: b"CX2P " + b),
)


@FUZZ
@given(control_bytes)
@example(b"CX2P REGISTER " + b"A=" + b"x" * 63 + b"\n")
@example(b"CX2P REGISTER =x\n")
@example(b"CX2P\n")
def test_parse_control_refuses_cleanly_or_is_consistent(buf):
    try:
        c = codec.parse_control(buf)
    except codec.CodecError:
        return
    text = buf.decode("ascii")
    assert text.startswith("CX2P") and len(buf) <= codec.MAX_CONTROL_LEN + 1
    assert "\n" not in text[:-1]  # one line, the newline only at the end
    assert c.verb and " " not in c.verb
    for k, v in c.fields:
        assert k and 1 <= len(v) <= codec.MAX_VALUE_LEN and " " not in k + v


token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_abc0123456789.:/-", min_size=1, max_size=20)


@FUZZ
@given(st.sampled_from(["REGISTER", "CONFIG", "X"]),
       st.lists(st.tuples(token, st.text(alphabet="abc019./:=-", min_size=1, max_size=63)),
                max_size=12))
def test_format_then_parse_control_round_trip(verb, fields):
    try:
        line = codec.format_control(verb, fields)
    except codec.CodecError:
        assert sum(len(k) + len(v) + 2 for k, v in fields) + len(verb) + 6 > codec.MAX_CONTROL_LEN
        return
    c = codec.parse_control(line)
    assert c.verb == verb and list(c.fields) == [(k, v) for k, v in fields]


@FUZZ
@given(st.binary(max_size=40))
def test_small_helpers_never_raise(buf):
    codec.looks_encrypted(buf)
    codec.is_control(buf)
    d, s = codec.inner_ipv4_dst(buf), codec.inner_ipv4_src(buf)
    assert (d is None) == (s is None) == (len(buf) < 20 or buf[0] >> 4 != 4)
