"""Coverage-guided fuzzing (atheris / libFuzzer) of camex's parsers.

    .venv/bin/python tests/fuzz/fuzz_parsers.py codec   -runs=200000
    .venv/bin/python tests/fuzz/fuzz_parsers.py layers  -max_total_time=60
    .venv/bin/python tests/fuzz/fuzz_parsers.py capture -max_total_time=60 CORPUS_DIR

Targets:
  codec    camex.legacy.codec: parse_header, open_datagram, parse_control
  layers   Scapy dissection of the bytes as a camex UDP payload (port 7000)
           and as each CX2P layer; CX2P layers must rebuild the same bytes
  capture  camex.capture + camex-dissect's record logic on the bytes as a
           capture file (pcap/pcapng)

Anything other than the documented refusals (CodecError, InvalidTag,
NoKeyError, CaptureError) is a crash; libFuzzer writes the input to
crash-<hash>, which then becomes a regression test in tests/unit/test_fuzz_*.
Seeds: tests/vectors/legacy.json (and, for capture, the first records of
../shared/vectors captures) are added to the run when no corpus is given.
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
    from camex import capture, dissect
    from camex.legacy import codec
    from camex.proto import crypto as pcrypto

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests" / "vectors" / "legacy.json").read_text())
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
        for d in capture.datagrams(io.BytesIO(data), stats):
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


TARGETS = {"codec": t_codec, "layers": t_layers, "capture": t_capture}


def seeds(target: str) -> list[bytes]:
    out = [bytes.fromhex(v["datagram"]) for v in VECTORS["encrypted"] + VECTORS["malformed"]]
    out += [bytes.fromhex(v["bytes"]) for v in VECTORS["control"]]
    if target == "capture":
        shared = Path(os.environ.get("CAMEX_VECTORS") or REPO.parent / "shared" / "vectors")
        out = [p.read_bytes()[:4000] for p in sorted(shared.glob("*.pcap"))]
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
