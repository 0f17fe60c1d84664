"""Coverage-guided fuzzing (atheris / libFuzzer) of camex's parsers.

    .venv/bin/python tests/fuzz/fuzz_parsers.py codec   -runs=200000
    .venv/bin/python tests/fuzz/fuzz_parsers.py layers  -max_total_time=60
    .venv/bin/python tests/fuzz/fuzz_parsers.py capture -max_total_time=60 CORPUS_DIR

Targets:
  codec    camex.legacy.codec: parse_header, open_datagram, parse_control
  layers   Scapy dissection of the bytes as a camex UDP payload (port 7000)
           and as each CX2P layer; CX2P layers must rebuild the same bytes
  capture  camex.dissect.capture + camex-dissect's record logic on the bytes as a
           capture file (pcap/pcapng)
  v2       camex v2 (BULK included): the bytes as a v2 datagram (and as a
           BULK fragment) through camex.v2.wire and the Scapy layers, which
           must rebuild the same bytes and agree with wire; as BULK records
           and handshake TLVs; cut into datagrams fed to camex-dissect's
           v2 dissector with a key log (BULK reassembly and decryption); and
           as one captured datagram that may be a UDP GSO run (dissect_gso)

Anything other than the documented refusals (CodecError, InvalidTag,
NoKeyError, CaptureError) is a crash; libFuzzer writes the input to
crash-<hash>, which then becomes a regression test in tests/unit/test_fuzz_*.
Seeds: tests/vectors/legacy.json (for capture, the first records of the
captures in tests/vectors/captures; for v2, tests/vectors/v2.json and v2_bulk.json)
are added to the run when no corpus is given.
`make fuzz-atheris` runs each target for a while. Needs `pip install atheris`
(the `fuzz` extra).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from camex.dissect import capture, cli as dissect, gso as dissect_gso
    from camex.legacy import codec
    from camex.proto import crypto as pcrypto
    from camex.proto import v2 as pv2
    from camex.v2 import wire

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests" / "vectors" / "legacy.json").read_text())
V2 = json.loads((REPO / "tests" / "vectors" / "v2.json").read_text())
V2_BULK = json.loads((REPO / "tests" / "vectors" / "v2_bulk.json").read_text())
V2_KEYLOG = pv2.KeyLog(V2["keylog"] + [V2_BULK["keylog"]])
AEAD = ChaCha20Poly1305(codec.derive_key(b"demo-global-secret"))
RING = pcrypto.KeyRing([b"demo-global-secret"])


def t_codec(data: bytes) -> None:
    try:
        h = codec.parse_header(data)
    except codec.CodecError:
        h = None
    if h is not None:
        assert len(data) == h.length + codec.OVERHEAD_ENC
        try:
            codec.open_datagram(AEAD, data, h)
        except InvalidTag:
            pass
    try:
        c = codec.parse_control(data)
        assert c.verb
    except codec.CodecError:
        pass
    codec.looks_encrypted(data)
    codec.is_control(data)
    codec.inner_ipv4_dst(data)


def t_layers(data: bytes) -> None:
    from scapy.layers.inet import IP, UDP

    from camex import proto
    pkt = IP(bytes(IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=7000) / data))
    pkt.summary()
    layer = pkt[UDP].payload
    if isinstance(layer, (proto.CX2PControl, proto.CX2PEncrypted, proto.CX2PMalformed)):
        assert bytes(layer) == data
    if isinstance(layer, proto.CX2PEncrypted):
        try:
            proto.decrypt(layer, RING)
        except (codec.CodecError, proto.NoKeyError):
            pass


def t_capture(data: bytes) -> None:
    stats = capture.Stats()
    dis = _dissector()
    try:
        for d in (d for d0 in capture.datagrams(io.BytesIO(data), stats)
                  for d in dis.split(d0)):
            rec = dis.record(d)
            if rec is not None:
                rec.pop("_inner_bytes", None)
                dissect.text_line(rec)
                json.dumps(rec)
    except capture.CaptureError:
        pass
    dissect.summary_lines(dis, stats)


_DIS = []


def _dissector():
    if not _DIS:
        _DIS.append(dissect.Dissector(RING, [7000]))
    d = _DIS[0]
    d.windows.clear()
    d.clients.clear()
    d.totals.clear()
    return d


def _v2_datagram(d: bytes) -> None:
    if not wire.is_v2(d):  # what the classifier gives the v2 layers
        return
    p = pv2.CamexV2(d)
    p.summary()
    assert bytes(p) == d
    b = wire.parse_bulk(d)
    if b is not None:
        x = p[pv2.CamexV2Bulk]
        assert (int(p.flags), p.index, x.receiver_index, x.counter, x.count) == b[:5]
        assert bytes(x.slice) == bytes(b[5])
    frame = pv2.join_bulk([d])
    if frame is not None:
        V2_KEYLOG.open_bulk(*frame)
    if wire.msg_type(d) == wire.T_DATA:
        V2_KEYLOG.open(d)


def t_v2(data: bytes) -> None:
    _v2_datagram(data)
    if len(data) >= 2:
        _v2_datagram(bytes((wire.MARK, wire.T_BULK)) + data[2:])
    recs = pv2.CamexV2BulkRecords(data)
    recs.summary()
    assert bytes(recs) == data
    items = wire.parse_bulk_records(data)
    if items is not None:
        assert [(r.gso_size, bytes(r.payload)) for r in recs.records] == \
            [(g, bytes(x)) for g, x in items]
    pl = pv2.CamexV2Payload(data)
    pl.summary()
    assert bytes(pl) == data
    req = wire.decode_request(data)
    if req is not None:
        assert (pl.features() or 0) == req.features
    wire.decode_config(data)
    # The bytes as a run of datagrams (u16 length, datagram) through the v2
    # dissector with the vectors' key log: BULK reassembly and decryption.
    dis = _v2_dissector()
    pos, n = 0, 0
    while pos + 2 <= len(data) and n < 64:
        size = int.from_bytes(data[pos:pos + 2], "big") % 1500
        chunk = bytes((wire.MARK,)) + data[pos + 2:pos + 2 + size]
        pos += 2 + size
        n += 1
        if not wire.is_v2(chunk):
            continue
        d = capture.Datagram(n, 1000.0 + n, "192.0.2.10", 40000, "192.0.2.1", 7000,
                             chunk, len(chunk))
        rec = dis.record(d)
        rec.pop("_inner_bytes", None)
        dissect.text_line(rec)
        json.dumps(rec)
    json.dumps(dis.v2.as_dict())
    dis.v2.summary_lines()
    # The bytes as one captured UDP datagram: a GSO run is cut losslessly.
    for complete in (True, False):
        whole = capture.Datagram(1, 1000.0, "192.0.2.10", 40000, "192.0.2.1", 7000, data,
                                 len(data) + (0 if complete else 7), complete)
        parts = dissect_gso.split(whole, True)
        assert b"".join(p.payload for p in parts) == data


_V2_DIS = []


def _v2_dissector():
    # A new V2Dissector per input (its state is the point), one Dissector.
    if not _V2_DIS:
        _V2_DIS.append(dissect.Dissector(RING, [7000], V2_KEYLOG))
    d = _V2_DIS[0]
    d.v2 = dissect.V2Dissector(V2_KEYLOG, [7000])
    d.clients.clear()
    d.totals.clear()
    return d


TARGETS = {"codec": t_codec, "layers": t_layers, "capture": t_capture, "v2": t_v2}


def seeds(target: str) -> list[bytes]:
    out = [bytes.fromhex(v["datagram"]) for v in VECTORS["encrypted"] + VECTORS["malformed"]]
    out += [bytes.fromhex(v["bytes"]) for v in VECTORS["control"]]
    if target == "capture":
        captures = Path(os.environ.get("CAMEX_VECTORS") or REPO / "tests" / "vectors" / "captures")
        out = [p.read_bytes()[:4000] for p in sorted(captures.glob("*.pcap"))]
    if target == "v2":
        out = [bytes.fromhex(v["bytes"]) for v in V2["datagrams"]]
        for f in V2_BULK["frames"]:
            frags = [bytes.fromhex(x) for x in f["fragments"]]
            out += frags + [bytes.fromhex(f["plaintext"])]
            # the frame as a run of datagrams for the dissector part
            out.append(b"".join(len(x[1:]).to_bytes(2, "big") + x[1:] for x in frags))
        out += [bytes.fromhex(t["bytes"]) for t in V2_BULK["tlv"]]
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options] [CORPUS]")
    target = argv[1]
    args = [argv[0]] + argv[2:]
    if not any(not a.startswith("-") for a in argv[2:]):
        corpus = tempfile.mkdtemp(prefix=f"camex-fuzz-{target}-")
        for i, s in enumerate(seeds(target)):
            Path(corpus, f"seed-{i}").write_bytes(s)
        args.append(corpus)
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
