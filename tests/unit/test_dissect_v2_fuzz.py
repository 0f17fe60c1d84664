"""Property tests of the v2 parsers of camex-dissect and the Scapy layers:
arbitrary and mutated v2 datagrams (BULK fragments among them) never make
them raise, the layers always rebuild the bytes they dissected, and
wherever the daemon's wire module accepts a message (a BULK header, BULK
records, handshake TLVs) the layers show the same fields. BULK frames cut,
shuffled, duplicated and thinned out decrypt exactly when all their
fragments are in the capture."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.utils import wrpcap

from camex.dissect import cli as dissect
from camex.proto import v2 as L
from camex.v2 import wire

N = int(os.environ.get("CAMEX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VECTORS = json.loads((Path(__file__).resolve().parents[2] / "tests/vectors/v2.json").read_text())
BULK = json.loads((Path(__file__).resolve().parents[2] /
                   "tests/vectors/v2_bulk.json").read_text())
SEEDS = [bytes.fromhex(v["bytes"]) for v in VECTORS["datagrams"]] + \
    [bytes.fromhex(x) for f in BULK["frames"] for x in f["fragments"]]
KEYLOG = L.KeyLog(VECTORS["keylog"] + [BULK["keylog"]])


@st.composite
def v2_datagrams(draw):
    """A v2 datagram: a real one mutated (flipped, cut, extended) or a
    random body after a valid mark and type."""
    if draw(st.booleans()):
        d = bytearray(draw(st.sampled_from(SEEDS)))
        for _ in range(draw(st.integers(0, 4))):
            i = draw(st.integers(2, len(d) - 1))
            d[i] ^= draw(st.integers(1, 255))
        cut = draw(st.integers(8, len(d)))
        return bytes(d[:cut]) + draw(st.binary(max_size=40))
    t = draw(st.integers(1, wire.T_BULK))
    return bytes((wire.MARK, t)) + draw(st.binary(min_size=6, max_size=300))


@FUZZ
@given(v2_datagrams())
@example(b"\xc2\x01\x00\x00\x00\x00\x00\x00\xff")          # ID length past the end
@example(b"\xc2\x04\x00\x00\xaa\x3d\x75\x3e" + bytes(24))  # logged index, forged tag
def test_layers_never_raise_and_rebuild_the_bytes(d):
    p = L.CamexV2(d)
    p.summary()
    assert bytes(p) == d
    assert L.decrypt(d, KEYLOG) is None or wire.msg_type(d) == wire.T_DATA


@FUZZ
@given(v2_datagrams())
def test_layers_agree_with_wire_where_wire_accepts(d):
    p = L.CamexV2(d)
    t = wire.msg_type(d)
    if t == wire.T_INIT and (init := wire.parse_init(d)) is not None:
        i = p[L.CamexV2Init]
        assert (i.sender_index, i.client_id.decode(), bytes(i.mac1), bytes(i.mac2)) == \
            (init.sender, init.client_id, init.mac1, init.mac2)
        assert bytes(i.ephemeral) + bytes(i.encrypted_payload) == init.noise
    elif t == wire.T_RESP and (r := wire.parse_resp(d)) is not None:
        x = p[L.CamexV2Resp]
        assert (x.receiver_index, bytes(x.ephemeral) + bytes(x.encrypted_payload), bytes(x.mac1)) \
            == (r.receiver, r.noise, r.mac1)
    elif t == wire.T_COOKIE and (c := wire.parse_cookie(d)) is not None:
        x = p[L.CamexV2Cookie]
        assert (x.receiver_index, bytes(x.nonce), bytes(x.encrypted_cookie)) == c
    elif t == wire.T_DATA and (h := wire.parse_data_header(d)) is not None:
        x = p[L.CamexV2Data]
        assert (int(p.flags), x.receiver_index, x.counter) == h
        assert bytes(x.ciphertext) + bytes(x.tag) == d[16:]
    elif t == wire.T_NOSESSION and (n := wire.parse_nosession(d)) is not None:
        assert p[L.CamexV2NoSession].index == n
    elif t == wire.T_BULK and (b := wire.parse_bulk(d)) is not None:
        x = p[L.CamexV2Bulk]
        assert (int(p.flags), p.index, x.receiver_index, x.counter, x.count, bytes(x.slice)) \
            == b[:5] + (bytes(b[5]),)
    if t == wire.T_BULK:   # a frame of one fragment joins iff wire accepts the header
        assert (L.join_bulk([d]) is not None) == (wire.parse_bulk(d) is not None
                                                  and d[16] == 1)


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.tuples(st.integers(0, 65535), st.binary(min_size=1, max_size=60)),
                          max_size=4).map(wire.pack_bulk_records),
                 st.lists(st.tuples(st.integers(0, 65535), st.binary(min_size=1, max_size=60)),
                          max_size=4).map(lambda r: wire.pack_bulk_records(r) + bytes(4) + b"pad")))
def test_bulk_records_layer_agrees_with_wire(plain):
    layer = L.CamexV2BulkRecords(plain)
    layer.summary()
    assert bytes(layer) == plain
    items = wire.parse_bulk_records(plain)
    if items is not None:
        assert [(r.length, r.gso_size, bytes(r.payload)) for r in layer.records] == \
            [(len(p), g, bytes(p)) for g, p in items]


@FUZZ
@given(st.one_of(st.binary(max_size=60),
                 st.lists(st.tuples(st.integers(1, 9), st.binary(max_size=6)), max_size=5).map(
                     lambda items: b"".join(bytes((t, len(v))) + v for t, v in items))))
def test_handshake_tlv_layer_agrees_with_wire(raw):
    pl = L.CamexV2Payload(raw)
    pl.summary()
    assert bytes(pl) == raw
    req = wire.decode_request(raw)
    if req is not None:
        assert (pl.features() or 0) == req.features
        modes = [t for t in pl.get(wire.TLV_MODE) if len(t) == 3]
        if modes:
            assert req.auto == (modes[-1].mode == 1)
    cfg = wire.decode_config(raw)
    if isinstance(cfg, wire.Config):
        assert (pl.features() or 0) == cfg.features


def _dissect(tmp_path_factory, datagrams, keylog: str, records: int | None = None) -> list:
    """camex-dissect --json --keylog over a capture of `datagrams` (client to
    server port 7000, 1 ms apart): `records` (default: one per datagram),
    then the summary."""
    path = tmp_path_factory.mktemp("v2fuzz") / "f.pcap"
    keys = path.with_name("k.log")
    keys.write_text(keylog)
    pkts = []
    for i, d in enumerate(datagrams):
        p = IP(src="192.0.2.10", dst="192.0.2.1") / UDP(sport=40000, dport=7000) / d
        p.time = 1000 + i * 0.001
        pkts.append(p)
    wrpcap(str(path), pkts)
    out = io.StringIO()
    with redirect_stdout(out):
        rc = dissect.main([str(path), "--json", "--keylog", str(keys)])
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rc == 0 and len(lines) == (len(datagrams) if records is None else records) + 1
    return lines


KEY = bytes(range(32))
BULK_KEYS = f"CAMEX_V2 {0x0BADCAFE:08x} {KEY.hex()}\n"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([0, 536, 1388]), st.binary(min_size=1, max_size=3000)),
                min_size=1, max_size=3),
       st.integers(60, 1472), st.randoms(use_true_random=False),
       st.sampled_from(["all", "drop", "dup", "flip", "gso"]))
def test_bulk_frames_cut_shuffled_and_damaged(tmp_path_factory, items, size, rnd, damage):
    try:
        frags = [bytes(f) for f in L.seal_bulk(0x0BADCAFE, 77, KEY, items, size=size)]
    except ValueError:   # more than 64 fragments at this size
        return
    sent = list(frags)
    if damage == "drop" and len(sent) > 1:
        sent.pop(rnd.randrange(len(sent)))
    elif damage == "dup":
        sent.append(rnd.choice(sent))
    elif damage == "flip":
        i = rnd.randrange(len(sent))
        j = rnd.randrange(2, len(sent[i]))   # bytes 0-1 would make it another protocol
        sent[i] = sent[i][:j] + bytes((sent[i][j] ^ 0x40,)) + sent[i][j + 1:]
    rnd.shuffle(sent)
    if damage == "gso":   # one GSO run, captured before the kernel cut it
        sent = [b"".join(frags)]
    lines = _dissect(tmp_path_factory, sent, BULK_KEYS, len(frags) if damage == "gso" else None)
    opened = [r for r in lines[:-1] if "packets" in r]
    bulk = lines[-1]["summary"]["v2"]["bulk"]
    if damage in ("all", "dup", "gso") or (damage == "drop" and len(frags) == 1):
        assert len(opened) == 1 and opened[0]["status"] == "ok"
        assert opened[0]["bulk"]["records"] == [{"length": len(p), "gso_size": g}
                                                for g, p in items]
        assert bulk["complete"] == 1 and bulk["incomplete"] == 0
    elif damage == "drop":
        assert not opened and bulk["incomplete"] == 1
    else:   # one bit flipped somewhere: never decrypted, always reported
        assert not opened
        assert any(r["status"] in ("no-key", "malformed") for r in lines[:-1]) or \
            bulk["incomplete"] >= 1


@FUZZ
@given(st.lists(v2_datagrams(), min_size=1, max_size=8))
def test_dissector_reports_every_datagram_and_never_raises(tmp_path_factory, ds):
    lines = _dissect(tmp_path_factory, ds, "\n".join(VECTORS["keylog"]) + "\n")
    for rec in lines[:-1]:
        assert rec["mode"] == "v2"
        assert rec["status"] in ("ok", "no-key", "replay", "malformed")
    summary = lines[-1]["summary"]
    assert sum(summary["v2"]["messages"].values()) == len(ds)
