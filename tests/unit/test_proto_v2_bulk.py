"""Scapy layers of v2 BULK and of the handshake TLVs (camex/proto/v2.py,
v2_payload.py) on the shared vectors tests/vectors/v2_bulk.json - the same
bytes the daemon's codec (camex.v2.wire) is checked against in
test_v2_bulk_vectors.py: dissecting gives the vector's fields, building
from those fields gives the vector's bytes, frames join and open with the
key log in any fragment order, and tampered frames do not open."""

import json
import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from camex import proto
from camex.proto import v2 as L
from camex.proto import v2_payload as P
from camex.v2 import wire

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/v2_bulk.json").read_text())
KEY = bytes.fromhex(VECTORS["key"])
KEYLOG = L.KeyLog([VECTORS["keylog"]])
FRAMES = VECTORS["frames"]
FRAGMENTS = [(f, i, bytes.fromhex(x)) for f in FRAMES for i, x in enumerate(f["fragments"])]


def h(x):
    return bytes.fromhex(x)


def frags(f):
    return [h(x) for x in f["fragments"]]


def on_udp(payload, dport=51000):
    return IP(bytes(IP(src="192.0.2.10", dst="192.0.2.1") / UDP(sport=40000, dport=dport)
                    / payload))


def names(vs):
    return [v["name"] for v in vs]


# ------------------------------------------------------------ fragments


@pytest.mark.parametrize("f,i,d", FRAGMENTS, ids=[f"{f['name']}-{i}" for f, i, _ in FRAGMENTS])
def test_fragment_fields_on_any_port(f, i, d):
    for port in (7000, 51000):
        pkt = on_udp(d, port)
        assert pkt.haslayer(L.CamexV2Bulk), pkt.summary()
        v2, b = pkt[L.CamexV2], pkt[L.CamexV2Bulk]
        assert (v2.type, int(v2.flags), v2.index) == (wire.T_BULK, f["flags"], i)
        assert (b.receiver_index, b.counter, b.count) == (f["receiver"], f["counter"], f["count"])
        assert (b.reserved1, b.reserved2, b.fragment_index) == (0, 0, i)
        assert bytes(v2) == d
    flags, index, receiver, counter, count, data = wire.parse_bulk(d)
    assert bytes(b.slice) == bytes(data) and (index, count) == (i, f["count"])
    summary = on_udp(d).summary()
    assert (f"BULK receiver={f['receiver']:08x} counter={f['counter']}" in summary
            and f"index={i} count={f['count']}" in summary)


@pytest.mark.parametrize("f,i,d", FRAGMENTS, ids=[f"{f['name']}-{i}" for f, i, _ in FRAGMENTS])
def test_fragment_built_from_fields_is_the_vector(f, i, d):
    pkt = L.CamexV2(flags=f["flags"], index=i) / L.CamexV2Bulk(
        receiver_index=f["receiver"], counter=f["counter"], count=f["count"],
        slice=d[wire.HEADER_BULK:])
    head = bytearray(wire.bulk_header(f["receiver"], f["counter"], f["count"], f["flags"]))
    head[3] = i
    assert bytes(pkt) == bytes(head) + d[wire.HEADER_BULK:] == d
    assert pkt[L.CamexV2].type == wire.T_BULK  # filled in by the binding


def test_flags_show_by_name():
    rekey = next(f for f in FRAMES if f["flags"] == wire.FLAG_REKEY)
    assert "[REKEY]" in L.CamexV2(frags(rekey)[0]).summary()


def test_byte_3_is_the_index_of_bulk_and_reserved_elsewhere():
    assert bytes(L.CamexV2(type=wire.T_BULK, index=7))[3] == 7
    assert bytes(L.CamexV2(type=wire.T_NOSESSION, reserved=0x33))[3] == 0x33
    p = L.CamexV2(wire.pack_nosession(9)[:3] + b"\x33" + wire.pack_nosession(9)[4:])
    assert p.reserved == 0x33 and "index" not in p.fields
    assert L.CamexV2(frags(FRAMES[0])[1]).index == 1


# ------------------------------------------------------------ frames


@pytest.mark.parametrize("f", FRAMES, ids=names(FRAMES))
def test_frame_joins_in_any_order_and_opens(f):
    parts = frags(f)
    for order in (parts, parts[::-1], random.Random(7).sample(parts, len(parts))):
        frame = L.join_bulk(order)
        assert frame.header == h(f["ad"]) and frame.ciphertext == h(f["ciphertext"])
        recs = L.decrypt_bulk(order, KEYLOG)
        assert [(r.gso_size, bytes(r.payload).hex()) for r in recs.records] == \
            [(r["gso_size"], r["packet"]) for r in f["records"]]
        assert bytes(recs) == h(f["plaintext"])
    opened = KEYLOG.open_bulk(parts[-1][:wire.HEADER_BULK], h(f["ciphertext"]))
    assert opened.plaintext == h(f["plaintext"]) and opened.index == f["receiver"]


@pytest.mark.parametrize("f", FRAMES, ids=names(FRAMES))
def test_seal_bulk_reproduces_the_fragments(f):
    items = [(r["gso_size"], h(r["packet"])) for r in f["records"]]
    built = L.seal_bulk(f["receiver"], f["counter"], KEY, items, size=f["datagram_size"],
                        flags=f["flags"])
    assert [bytes(p) for p in built] == frags(f)
    assert bytes(L.bulk_records(items)) == wire.pack_bulk_records(items) == h(f["plaintext"])


def test_super_packet_record_is_tcp_with_its_gso_size():
    f = next(f for f in FRAMES if f["records"][0]["gso_size"] and f["count"] == 3)
    (g, inner), = L.decrypt_bulk(frags(f), KEYLOG).packets()
    assert g == f["records"][0]["gso_size"] and inner.haslayer(TCP)
    assert inner[IP].len == len(h(f["records"][0]["packet"]))
    assert f"TSO gso_size={g}" in L.decrypt_bulk(frags(f), KEYLOG).summary()


@pytest.mark.parametrize("t", VECTORS["tampered"], ids=names(VECTORS["tampered"]))
def test_tampered_frames_do_not_open(t):
    parts = [h(x) for x in t["fragments"]]
    assert L.decrypt_bulk(parts, KEYLOG) is None
    frame = L.join_bulk(parts)
    assert frame is None or KEYLOG.open_bulk(*frame) is None
    for d in parts:
        assert bytes(L.CamexV2(d)) == d


def test_join_refuses_what_is_not_one_whole_frame():
    f = next(f for f in FRAMES if f["count"] >= 3)
    parts = frags(f)
    assert L.join_bulk(parts[:-1]) is None                   # a fragment missing
    assert L.join_bulk(parts + parts[:1]) is None            # one twice
    other = bytearray(parts[1])
    other[8] ^= 1                                            # another counter
    assert L.join_bulk([parts[0], bytes(other)] + parts[2:]) is None
    assert L.join_bulk([]) is None
    assert L.join_bulk([wire.pack_nosession(1)]) is None


def test_a_key_for_another_index_does_not_open_a_frame():
    f = FRAMES[0]
    log = L.KeyLog()
    log.add(f["receiver"] ^ 1, KEY)
    assert L.decrypt_bulk(frags(f), log) is None


@pytest.mark.parametrize("m", VECTORS["malformed"], ids=names(VECTORS["malformed"]))
def test_malformed_fragments_dissect_rebuild_and_never_join(m):
    d = h(m["bytes"])
    assert wire.parse_bulk(d) is None
    assert L.join_bulk([d]) is None
    pkt = on_udp(d)
    pkt.summary()
    if pkt.haslayer(L.CamexV2):
        assert bytes(pkt[L.CamexV2]) == d


def test_truncated_bulk_dissects_without_raising():
    d = frags(FRAMES[0])[0]
    for n in range(8, 40):
        pkt = on_udp(d[:n])
        assert pkt.haslayer(L.CamexV2) and bytes(pkt[L.CamexV2]) == d[:n]
        pkt.summary()


def test_seal_bulk_cuts_at_the_datagram_size():
    big = IP(src="10.0.0.2", dst="10.0.0.3") / TCP() / (b"z" * 30000)
    parts = [bytes(p) for p in L.seal_bulk(1, 2, KEY, [(1400, big)], size=1472)]
    assert {len(p) for p in parts[:-1]} == {1472} and 21 <= len(parts[-1]) <= 1472
    assert [p[3] for p in parts] == list(range(len(parts)))
    log = L.KeyLog()
    log.add(1, KEY)
    (g, inner), = L.decrypt_bulk(parts[::-1], log).packets()
    assert g == 1400 and bytes(inner) == bytes(big)
    with pytest.raises(ValueError, match="at most 64"):
        L.seal_bulk(1, 2, KEY, [b"x" * 60000, b"y" * 60000], size=1472)


# ------------------------------------------------------------ handshake TLVs


@pytest.mark.parametrize("t", VECTORS["tlv"], ids=names(VECTORS["tlv"]))
def test_tlv_payloads(t):
    raw = h(t["bytes"])
    pl = P.CamexV2Payload(raw)
    assert bytes(pl) == raw and not pl.stray
    assert (pl.features() or 0) == t["features"]
    decoded = wire.decode_request(raw) if t["message"] == "INIT" else wire.decode_config(raw)
    assert decoded.features == t["features"]
    feats = pl.get(wire.TLV_FEATURES)
    assert len(feats) == (1 if t["features"] else 0)
    if t["features"] & wire.FEATURE_BULK:
        assert isinstance(feats[0], P.CamexV2TlvFeatures) and "BULK" in pl.summary()


def test_tlvs_built_from_layers():
    init = P.payload(P.CamexV2TlvMode(mode=1), P.CamexV2TlvFeatures(features="BULK"))
    want = next(t for t in VECTORS["tlv"] if t["name"] == "init-auto-bulk")
    assert bytes(init) == h(want["bytes"]) == \
        wire.encode_request(wire.Request(auto=True, features=wire.FEATURE_BULK))
    import ipaddress
    cfg = wire.Config(local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"),
                      gateway_ip=ipaddress.IPv4Address("10.0.0.1"),
                      routes=[ipaddress.IPv4Network("192.168.5.0/24")], mtu=1400,
                      features=wire.FEATURE_BULK)
    built = P.payload(P.CamexV2TlvLocalCidr(address="10.0.0.2", prefix=24),
                      P.CamexV2TlvGateway(address="10.0.0.1"),
                      P.CamexV2TlvRoute(network="192.168.5.0", prefix=24),
                      P.CamexV2TlvMtu(mtu=1400), P.CamexV2TlvFeatures(features=1))
    assert bytes(built) == wire.encode_config(cfg)
    refusal = P.payload(P.CamexV2TlvError(code=2, text=b"taken"))
    assert bytes(refusal) == wire.encode_config(None, wire.Refusal(2, "taken"))
    assert "ERROR address: taken" in refusal.summary()


def test_longer_features_keep_their_first_byte_as_the_daemon_does():
    raw = b"\x07\x03\x01\xaa\xbb\x07\x01\x00"   # two items: the last one counts
    pl = P.CamexV2Payload(raw)
    assert bytes(pl) == raw and pl.tlvs[0].more == b"\xaa\xbb"
    assert pl.features() == wire.decode_request(raw).features == 0
    assert P.CamexV2Payload(raw[:5]).features() == wire.decode_request(raw[:5]).features == 1


@pytest.mark.parametrize("raw", [b"\x07\x00",              # FEATURES without its byte
                                 b"\x0c\x03abc",          # unknown type
                                 b"\x05\x09\x05",         # length past the end
                                 b"\x01\x01\x01\x07",     # a stray byte at the end
                                 b""])
def test_odd_tlvs_dissect_and_rebuild(raw):
    pl = P.CamexV2Payload(raw)
    pl.summary()
    assert bytes(pl) == raw
    assert pl.features() is None


def test_open_init_reads_the_request_with_the_psk():
    v2 = json.loads((ROOT / "tests/vectors/v2.json").read_text())
    psk = bytes.fromhex(v2["psk"])
    for v in (v for v in v2["datagrams"] if v["type"] == wire.T_INIT):
        d = h(v["bytes"])
        pl = L.open_init(d, psk)
        req = wire.decode_request(bytes(pl))
        assert req is not None and bytes(pl) == bytes(P.CamexV2Payload(bytes(pl)))
        assert pl.get(wire.TLV_MODE)[0].mode == (1 if req.auto else 0)
        assert (pl.features() or 0) == req.features
        assert L.open_init(d, bytes(32)) is None
    assert L.open_init(wire.pack_nosession(1), psk) is None


def test_type_7_is_not_v2():
    assert proto.classify(b"\xc2\x07" + bytes(30), 40000, 51000) is None
    assert proto.classify(frags(FRAMES[0])[0], 40000, 51000) is L.CamexV2


def test_more_than_100_items_dissect():
    """Regression (atheris v2 target): Scapy caps a list at 100 items by
    raising; a payload of 300 empty TLVs, or 500 tiny records, is valid."""
    tlvs = b"\x09\x00" * 300
    assert len(P.CamexV2Payload(tlvs).tlvs) == 300 and bytes(P.CamexV2Payload(tlvs)) == tlvs
    data = b"\x00\x01x" * 500
    assert len(L.CamexV2Records(data).records) == len(wire.parse_records(data)) == 500
    bulk = b"\x00\x01\x00\x00x" * 500
    assert len(L.CamexV2BulkRecords(bulk).records) == len(wire.parse_bulk_records(bulk)) == 500


def test_bulk_layers_through_scapy_load_contrib():
    """`load_contrib("camex")` in a fresh interpreter names the BULK layers."""
    import subprocess
    import sys
    d = frags(FRAMES[0])[1].hex()
    code = (
        "from scapy.all import conf, load_contrib, IP, UDP\n"
        "conf.exts.load('camex')\n"
        "load_contrib('camex')\n"
        "import scapy.contrib.camex as m\n"
        f"p = IP(bytes(IP()/UDP(sport=1, dport=2)/bytes.fromhex('{d}')))\n"
        "print(p[m.CamexV2].index, p[m.CamexV2Bulk].count, m.CamexV2Payload.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", str(FRAMES[0]["count"]), "CamexV2Payload"]


def test_bulk_frames_of_a_capture(tmp_path):
    """bulk_frames(rdpcap(...)): frames in any order, one missing a
    fragment, one duplicated datagram, opened with the key log."""
    from scapy.utils import rdpcap, wrpcap
    a, b = FRAMES[0], FRAMES[2]
    fa, fb = frags(a), frags(b)
    datagrams = [fb[1], fa[2], fa[0], fb[1], fa[1], wire.pack_nosession(3)]   # fb[0] lost
    wrpcap(str(tmp_path / "c.pcap"), [IP(src="192.0.2.1", dst="192.0.2.2") /
                                      UDP(sport=7000, dport=40000) / d for d in datagrams])
    found = L.bulk_frames(rdpcap(str(tmp_path / "c.pcap")), KEYLOG)
    assert [(f.receiver, f.counter) for f in found] == [(b["receiver"], b["counter"]),
                                                        (a["receiver"], a["counter"])]
    fb_, fa_ = found
    assert fb_.frame is None and fb_.records is None and fb_.missing == [0]
    assert len(fb_.fragments) == 2            # both copies listed, counted once
    assert fa_.missing == [] and fa_.frame.ciphertext == h(a["ciphertext"])
    assert bytes(fa_.records) == h(a["plaintext"])
    assert L.bulk_frames(rdpcap(str(tmp_path / "c.pcap")))[1].records is None   # no key log
