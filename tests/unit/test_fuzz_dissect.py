"""Fuzzing camex-dissect and camex.dissect.capture with mutated captures: the only
acceptable failure is one CaptureError line (exit 1); anything else the
reader or the dissector raises is a bug."""

import io
import os
import random
import struct
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, wrpcap

from camex.dissect import capture, cli as dissect
from camex import proto

N = int(os.environ.get("CAMEX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("CAMEX_VECTORS") or REPO / "tests" / "vectors" / "captures")
PASS = "fuzz-pass"


def _packets():
    pkts = []
    for seq in range(6):
        inner = IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=seq) / (b"z" * (40 + 700 * (seq % 3)))
        wire = bytes(proto.seal(inner, PASS, b"\x01\x02\x03\x04", seq))
        outer = IP(src="10.250.0.2", dst="10.250.0.1", id=seq) / UDP(sport=40000, dport=7000) / wire
        pkts += fragment(outer, fragsize=600)
    pkts.append(IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=7000)
                / b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n")
    for i, p in enumerate(pkts):
        p.time = 1000 + i / 100
    return pkts


def _bases():
    d = Path(tempfile.mkdtemp(prefix="camex-fuzz-"))
    pkts = _packets()
    wrpcap(str(d / "a.pcap"), [Ether() / p for p in pkts])
    w = PcapNgWriter(str(d / "a.pcapng"))
    for p in pkts:
        w.write(Ether() / p)
    w.close()
    bases = [(d / "a.pcap").read_bytes(), (d / "a.pcapng").read_bytes()]
    real = VECTORS / "upstream-auto-enc.pcap"
    raw = real.read_bytes()
    # header + the first 20 records of a real capture
    pos = 24
    for _ in range(20):
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
    bases.append(raw[:pos])
    return bases


BASES = _bases()


@st.composite
def mutated(draw):
    buf = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate", "dup"]))
        pos = draw(st.integers(0, len(buf) - 1)) if buf else 0
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "cut":
            del buf[pos:pos + draw(st.integers(1, 64))]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "truncate":
            del buf[pos:]
        elif op == "dup" and buf:
            n = draw(st.integers(1, 200))
            buf[pos:pos] = buf[pos:pos + n]
    return bytes(buf)


def _run_reader(data):
    stats = capture.Stats()
    dis = dissect.Dissector(proto.KeyRing([PASS]), [7000])
    try:
        for d in capture.datagrams(io.BytesIO(data), stats):
            rec = dis.record(d)
            if rec is not None:
                dissect.text_line({k: v for k, v in rec.items() if k != "_inner_bytes"})
    except capture.CaptureError as exc:
        assert "\n" not in str(exc)
    dissect.summary_lines(dis, stats)


@FUZZ
@given(mutated())
def test_mutated_captures_never_crash_the_reader(data):
    _run_reader(data)


@FUZZ
@given(st.binary(max_size=400))
@example(b"\xd4\xc3\xb2\xa1" + b"\0" * 20 + b"\xff" * 16)
@example(b"\x0a\x0d\x0d\x0a" + b"\xff" * 40)
def test_random_bytes_never_crash_the_reader(data):
    _run_reader(data)


@settings(max_examples=max(20, N // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_capture_cli_exit_0_or_one_error_line(data):
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(data)
        f.flush()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = dissect.main([f.name, "--psk", PASS])
        assert rc in (0, 1)
        if rc == 1:
            assert len(err.getvalue().splitlines()) == 1
        else:
            assert err.getvalue() == ""
            assert "summary:" in out.getvalue()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400), st.booleans(),
                          st.binary(max_size=120)), max_size=60),
       st.integers(0, 2**32))
def test_reassembler_with_random_fragments(frags, seed):
    """Random (id, offset, more-fragments, data) pieces: no crash, bounded state."""
    r = capture.Reassembler(capture.Stats(), timeout=1.0, max_pending=4)
    rnd = random.Random(seed)
    out = []
    for i, (ident, off8, more, data) in enumerate(frags):
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), ident,
                                    (0x2000 if more else 0) | off8, 64, 17, 0,
                                    b"\x0a\xfa\x00\x02", b"\x0a\xfa\x00\x01"))
        if rnd.random() < 0.1:
            hdr[2:4] = struct.pack("!H", rnd.randrange(0, 70000) & 0xFFFF)
        out += list(r.feed(i + 1, i * 0.3, bytes(hdr) + data))
        assert len(r.pending) <= 4
    out += list(r.finish())
    assert not r.pending and not r.queue
    for d in out:
        assert len(d.payload) <= 65535


# ---- regressions found by fuzzing ------------------------------------------


def _pcapng_with_time(units_exponent: int, ts: int, tsoffset: int = 0) -> bytes:
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    pkt = bytes(IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=7000)
                / bytes(proto.seal(b"\x45" + b"\0" * 19, PASS, b"abcd", 1)))
    opts = struct.pack("<HHB3x", 9, 1, units_exponent)
    if tsoffset:
        opts += struct.pack("<HHq", 14, 8, tsoffset)
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 101, 0, 65535) + opts + b"\0\0\0\0")
    epb = block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt)
    return shb + idb + epb


def test_regression_absurd_pcapng_timestamps(tmp_path):
    """gmtime() overflowed on a 64-bit timestamp in seconds, and the pcap
    writer could not pack it (found by test_mutated_captures...)."""
    for data in (_pcapng_with_time(0, 2**64 - 1), _pcapng_with_time(6, 5, tsoffset=-2**40)):
        path = tmp_path / "t.pcapng"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = dissect.main([str(path), "--psk", PASS, "-w", str(tmp_path / "o.pcap")])
        assert rc == 0, err.getvalue()
        assert "DATA seq=1" in out.getvalue() and err.getvalue() == ""
        assert len(list(capture.read_frames(tmp_path / "o.pcap"))) == 1


@settings(max_examples=max(50, N // 4), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=5),
       st.integers(1, 180), st.randoms(use_true_random=False))
def test_reassembly_restores_every_datagram(payloads, frag8, rnd):
    """Datagrams cut into fragments of any size, shuffled and interleaved,
    come out whole, each exactly once."""
    pkts = []
    for i, p in enumerate(payloads):
        pkt = IP(src="10.250.0.2", dst="10.250.0.1", id=1000 + i) / UDP(sport=40000 + i, dport=7000) / p
        pkts += [bytes(f) for f in fragment(pkt, fragsize=frag8 * 8)]
    rnd.shuffle(pkts)
    r = capture.Reassembler(capture.Stats())
    out = []
    for n, raw in enumerate(pkts):
        out += list(r.feed(n + 1, float(n), raw))
    out += list(r.finish())
    assert sorted((d.sport, d.payload) for d in out) == \
        sorted((40000 + i, p) for i, p in enumerate(payloads))
    assert all(d.complete for d in out)
