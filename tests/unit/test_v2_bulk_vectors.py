"""BULK vectors (tests/vectors/v2_bulk.json, built from the spec without
camex.v2.wire) against the daemon's codec: every fragment parses into the
spec's fields, the codec rebuilds the same header, AD and records, the
frame opens with the key after reassembly, malformed fragments are refused,
tampered frames fail, and the TLV_FEATURES payloads decode."""

import importlib.util
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from camex.v2 import framing, wire
from camex.v2.noise import nonce_bytes

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/v2_bulk.json").read_text())
KEY = bytes.fromhex(VECTORS["key"])
FRAMES = VECTORS["frames"]


def names(vs):
    return [v["name"] for v in vs]


def test_vectors_are_what_the_generator_makes_now():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tests/vectors/gen_v2_bulk.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build() == VECTORS, "stale: run .venv/bin/python tests/vectors/gen_v2_bulk.py"


def test_vectors_cover_flags_counts_and_record_kinds():
    assert {f["flags"] for f in FRAMES} == {0, wire.FLAG_REKEY}
    assert 1 in {f["count"] for f in FRAMES} and max(f["count"] for f in FRAMES) >= 3
    gs = [r["gso_size"] for f in FRAMES for r in f["records"]]
    assert 0 in gs and any(g > 0 for g in gs)
    assert VECTORS["keylog"].split()[1] == f"{FRAMES[0]['receiver']:08x}"


@pytest.mark.parametrize("f", FRAMES, ids=names(FRAMES))
def test_fragments_parse_into_the_spec_fields(f):
    frags = [bytes.fromhex(x) for x in f["fragments"]]
    assert len(frags) == f["count"]
    assert all(len(d) == f["datagram_size"] for d in frags[:-1])
    assert 20 < len(frags[-1]) <= f["datagram_size"]
    ct = b""
    for i, d in enumerate(frags):
        assert wire.is_v2(d) and wire.msg_type(d) == wire.T_BULK
        flags, index, receiver, counter, count, sl = wire.parse_bulk(d)
        assert (flags, index, receiver, counter, count) == \
            (f["flags"], i, f["receiver"], f["counter"], f["count"])
        ct += bytes(sl)
    assert ct.hex() == f["ciphertext"]


@pytest.mark.parametrize("f", FRAMES, ids=names(FRAMES))
def test_codec_builds_the_same_header_records_and_fragments(f):
    ad = wire.bulk_header(f["receiver"], f["counter"], f["count"], f["flags"])
    assert ad.hex() == f["ad"] and len(ad) == wire.HEADER_BULK
    records = [(r["gso_size"], bytes.fromhex(r["packet"])) for r in f["records"]]
    plain = wire.pack_bulk_records(records)
    assert plain.hex() == f["plaintext"]
    assert [(g, bytes(p)) for g, p in wire.parse_bulk_records(plain)] == records
    ct = ChaCha20Poly1305(KEY).encrypt(nonce_bytes(f["counter"]), plain, ad)
    assert [d.hex() for d in framing.cut_frame(ad, ct, f["datagram_size"])] == f["fragments"]
    # The glued form a core sends (one buffer, cut by the kernel): the same bytes.
    run = framing.glue_frame(ad, ct, f["datagram_size"])
    assert [bytes(d).hex() for d in run.datagrams()] == f["fragments"]


@pytest.mark.parametrize("f", FRAMES, ids=names(FRAMES))
def test_frame_reassembled_in_reverse_order_opens(f):
    r = framing.Reassembly()
    whole = None
    for x in reversed(f["fragments"]):
        _, index, receiver, counter, count, sl = wire.parse_bulk(bytes.fromhex(x))
        whole = r.add((receiver, counter), index, count, sl, 0.0)
    plain = ChaCha20Poly1305(KEY).decrypt(nonce_bytes(f["counter"]), whole,
                                          bytes.fromhex(f["ad"]))
    assert plain.hex() == f["plaintext"]


@pytest.mark.parametrize("m", VECTORS["malformed"], ids=names(VECTORS["malformed"]))
def test_malformed_fragments_are_refused(m):
    assert wire.parse_bulk(bytes.fromhex(m["bytes"])) is None


@pytest.mark.parametrize("t", VECTORS["tampered"], ids=names(VECTORS["tampered"]))
def test_tampered_frames_fail_the_tag(t):
    parsed = [wire.parse_bulk(bytes.fromhex(x)) for x in t["fragments"]]
    assert all(p is not None for p in parsed)
    slices = dict((p[1], bytes(p[5])) for p in parsed)
    flags, _, receiver, counter, count, _ = parsed[0]
    ad = wire.bulk_header(receiver, counter, count, flags)
    ct = b"".join(slices[i] for i in range(count))
    assert t["opens"] is False
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(KEY).decrypt(nonce_bytes(counter), ct, ad)


@pytest.mark.parametrize("t", VECTORS["tlv"], ids=names(VECTORS["tlv"]))
def test_features_tlv_decodes(t):
    data = bytes.fromhex(t["bytes"])
    if t["message"] == "INIT":
        req = wire.decode_request(data)
        assert req.features == t["features"]
        assert wire.encode_request(req) == data
    else:
        cfg = wire.decode_config(data)
        assert cfg.features == t["features"]
        assert wire.encode_config(cfg) == data


def test_records_that_overrun_are_refused():
    plain = wire.pack_bulk_records([(0, b"x" * 30)])
    assert wire.parse_bulk_records(plain[:-1]) is None
    assert wire.parse_bulk_records(plain + b"\0") is None          # stray byte
    assert [bytes(p) for _, p in wire.parse_bulk_records(plain + bytes(6))] == [b"x" * 30]
