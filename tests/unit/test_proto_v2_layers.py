"""Scapy layers of camex v2 (camex/proto/v2.py) on the shared vectors
(tests/vectors/v2.json): dissecting each datagram gives the fields decoded
from the spec, building from those fields gives the bytes of the daemon's
wire pack functions, and DATA opens with the key log."""

import json
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Padding, Raw

from camex import proto
from camex.proto import v2 as L
from camex.v2 import wire

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "tests/vectors/v2.json").read_text())
PSK = bytes.fromhex(VECTORS["psk"])
ALL = VECTORS["datagrams"]
KEYLOG = L.KeyLog(VECTORS["keylog"])


def of_type(t):
    return [v for v in ALL if v["type"] == t]


def ids(vs):
    return [v["name"] for v in vs]


def h(x):
    return bytes.fromhex(x)


def on_udp(payload, sport=40000, dport=7000):
    """Wire bytes re-dissected as sniff() would see them."""
    return IP(bytes(IP(src="192.0.2.10", dst="192.0.2.1") / UDP(sport=sport, dport=dport)
                    / payload))


# ------------------------------------------------------------ dissection


@pytest.mark.parametrize("v", ALL, ids=ids(ALL))
@pytest.mark.parametrize("port", [7000, 51000])
def test_dissected_on_any_port_by_content(v, port):
    pkt = on_udp(h(v["bytes"]), sport=port + 1, dport=port)
    assert pkt.haslayer(L.CamexV2) and pkt[L.CamexV2].type == v["type"]
    assert isinstance(pkt[L.CamexV2].payload, L.MESSAGE_CLASSES[v["type"]])
    assert bytes(pkt[L.CamexV2]) == h(v["bytes"])  # dissect -> rebuild: same bytes


@pytest.mark.parametrize("v", of_type(wire.T_INIT), ids=ids(of_type(wire.T_INIT)))
def test_init_fields(v):
    p = L.CamexV2(h(v["bytes"]))
    i = p[L.CamexV2Init]
    assert (p.mark, p.flags, p.reserved) == (0xC2, 0, 0)
    assert i.sender_index == v["sender_index"] and i.client_id == v["client_id"].encode()
    assert i.id_len == len(v["client_id"])
    assert (i.ephemeral.hex(), i.encrypted_payload.hex()) == (v["ephemeral"],
                                                              v["encrypted_payload"])
    assert (i.mac1.hex(), i.mac2.hex()) == (v["mac1"], v["mac2"])
    assert f"sender={v['sender_index']:08x}" in p.summary()
    assert f"id='{v['client_id']}'" in p.summary()


@pytest.mark.parametrize("v", of_type(wire.T_RESP), ids=ids(of_type(wire.T_RESP)))
def test_resp_fields(v):
    r = L.CamexV2(h(v["bytes"]))[L.CamexV2Resp]
    assert r.receiver_index == v["receiver_index"]
    assert (r.ephemeral.hex(), r.encrypted_payload.hex(), r.mac1.hex()) == (
        v["ephemeral"], v["encrypted_payload"], v["mac1"])


@pytest.mark.parametrize("v", of_type(wire.T_COOKIE), ids=ids(of_type(wire.T_COOKIE)))
def test_cookie_fields(v):
    c = L.CamexV2(h(v["bytes"]))[L.CamexV2Cookie]
    assert (c.receiver_index, c.nonce.hex(), c.encrypted_cookie.hex()) == (
        v["receiver_index"], v["nonce"], v["encrypted_cookie"])
    assert not c.payload  # 52 bytes exactly, nothing left over


@pytest.mark.parametrize("v", of_type(wire.T_DATA), ids=ids(of_type(wire.T_DATA)))
def test_data_fields_and_decryption(v):
    p = L.CamexV2(h(v["bytes"]))
    d = p[L.CamexV2Data]
    assert (int(p.flags), d.receiver_index, d.counter) == (v["flags"], v["receiver_index"],
                                                            v["counter"])
    assert (d.ciphertext.hex(), d.tag.hex()) == (v["ciphertext"], v["tag"])
    assert f"counter={v['counter']}" in p.summary()
    recs = L.decrypt(p, KEYLOG)
    if not v["opens"]:
        assert recs is None
        return
    assert [bytes(r.payload).hex() for r in recs.records] == v["packets"]
    assert bytes(recs.padding).hex() == v["padding"]
    assert bytes(recs) == h(v["plaintext"])


def test_data_flags_show_by_name():
    close = next(v for v in ALL if v["flags"] == wire.FLAG_CLOSE)
    rekey = next(v for v in ALL if v["flags"] == wire.FLAG_REKEY)
    assert "CLOSE" in L.CamexV2(h(close["bytes"])).summary()
    assert "REKEY" in L.CamexV2(h(rekey["bytes"])).summary()


@pytest.mark.parametrize("v", of_type(wire.T_NOSESSION), ids=ids(of_type(wire.T_NOSESSION)))
def test_nosession_fields(v):
    p = L.CamexV2(h(v["bytes"]))
    assert p[L.CamexV2NoSession].index == v["index"]
    assert p.summary().endswith(f"NOSESSION index={v['index']:08x}")


def test_decrypted_inner_packets_are_ip_layers():
    v = next(v for v in of_type(wire.T_DATA) if len(v.get("packets", [])) == 2)
    pkts = L.decrypt(h(v["bytes"]), KEYLOG).packets()
    assert [p[IP].dst for p in pkts] == ["10.251.0.9", "10.251.0.9"]
    rekey = next(v for v in ALL if v["flags"] == wire.FLAG_REKEY)
    inner = L.decrypt(h(rekey["bytes"]), KEYLOG).packets()[0]
    assert inner.haslayer(ICMP) and inner[ICMP].type == 8


# ------------------------------------------------------------ building


@pytest.mark.parametrize("v", of_type(wire.T_INIT), ids=ids(of_type(wire.T_INIT)))
def test_init_built_from_layers_is_wire_pack_init(v):
    cookie = h(v["cookie"]) if v["cookie"] else None
    pkt = L.CamexV2() / L.CamexV2Init(sender_index=v["sender_index"], client_id=v["client_id"],
                                      ephemeral=h(v["ephemeral"]),
                                      encrypted_payload=h(v["encrypted_payload"]))
    L.sign_init(pkt, PSK, cookie)
    head = wire.init_head(v["sender_index"], v["client_id"])
    noise = h(v["ephemeral"] + v["encrypted_payload"])
    assert bytes(pkt) == wire.pack_init(head, noise, wire.mac1_key(PSK), cookie) == h(v["bytes"])


@pytest.mark.parametrize("v", of_type(wire.T_RESP), ids=ids(of_type(wire.T_RESP)))
def test_resp_built_from_layers_is_wire_pack_resp(v):
    pkt = L.sign_resp(L.CamexV2() / L.CamexV2Resp(
        receiver_index=v["receiver_index"], ephemeral=h(v["ephemeral"]),
        encrypted_payload=h(v["encrypted_payload"])), PSK)
    noise = h(v["ephemeral"] + v["encrypted_payload"])
    assert bytes(pkt) == wire.pack_resp(v["receiver_index"], noise, wire.mac1_key(PSK)) \
        == h(v["bytes"])


@pytest.mark.parametrize("v", of_type(wire.T_COOKIE), ids=ids(of_type(wire.T_COOKIE)))
def test_cookie_built_from_layers_is_wire_pack_cookie(v):
    pkt = L.CamexV2() / L.CamexV2Cookie(receiver_index=v["receiver_index"], nonce=h(v["nonce"]),
                                        encrypted_cookie=h(v["encrypted_cookie"]))
    assert bytes(pkt) == wire.pack_cookie(v["receiver_index"], h(v["nonce"]),
                                          h(v["encrypted_cookie"])) == h(v["bytes"])


@pytest.mark.parametrize("v", of_type(wire.T_DATA), ids=ids(of_type(wire.T_DATA)))
def test_data_built_from_layers_is_wire_data(v):
    pkt = L.CamexV2(flags=v["flags"]) / L.CamexV2Data(
        receiver_index=v["receiver_index"], counter=v["counter"],
        ciphertext=h(v["ciphertext"]), tag=h(v["tag"]))
    head = wire.data_header(v["receiver_index"], v["counter"], v["flags"])
    assert bytes(pkt) == head + h(v["ciphertext"] + v["tag"]) == h(v["bytes"])


@pytest.mark.parametrize("v", [v for v in of_type(wire.T_DATA) if v["opens"] and not v["padding"]],
                         ids=lambda v: v["name"])
def test_seal_data_reproduces_the_datagram(v):
    key = KEYLOG.keys[v["receiver_index"]][0]
    pkt = L.seal_data(v["receiver_index"], v["counter"], key,
                      [h(p) for p in v["packets"]], flags=v["flags"])
    assert bytes(pkt) == h(v["bytes"])


@pytest.mark.parametrize("v", of_type(wire.T_NOSESSION), ids=ids(of_type(wire.T_NOSESSION)))
def test_nosession_built_from_layers_is_wire_pack_nosession(v):
    assert bytes(L.CamexV2() / L.CamexV2NoSession(index=v["index"])) == \
        wire.pack_nosession(v["index"]) == h(v["bytes"])


def test_type_and_id_length_come_from_the_layers():
    raw = bytes(L.CamexV2() / L.CamexV2Init(sender_index=1, client_id=b"cam-7"))
    assert raw[:4] == b"\xc2\x01\x00\x00" and raw[8] == 5 and raw[9:14] == b"cam-7"
    assert wire.parse_init(raw).client_id == "cam-7"
    assert bytes(L.CamexV2() / L.CamexV2NoSession(index=0x01020304)) == b"\xc2\x05\x00\x00\x04\x03\x02\x01"


def test_records_layer_builds_the_wire_records():
    a = IP(src="10.0.0.2", dst="10.0.0.1") / ICMP()
    b = IP(src="10.0.0.2", dst="10.0.0.3") / UDP() / b"x"
    assert bytes(L.records([a, b])) == wire.pack_records([bytes(a), bytes(b)])
    assert bytes(L.records([])) == b""
    assert L.CamexV2Records(b"").summary() == "camex v2 keepalive"


# ------------------------------------------------------------ edges


def test_udp_hook_prefers_v2_over_legacy_plaintext_on_the_camex_port():
    """On port 7000 the legacy classifier claims any payload as plaintext
    DATA; a v2 datagram there must still be v2."""
    v = of_type(wire.T_NOSESSION)[0]
    pkt = on_udp(h(v["bytes"]), dport=7000)
    assert pkt.haslayer(L.CamexV2) and not pkt.haslayer(proto.CX2PData)
    assert proto.classify(h(v["bytes"]), 40000, 7000) is L.CamexV2
    assert "v2" in proto.loaded_versions


@pytest.mark.parametrize("payload", [b"\xc2\x07\x00\x00\x00\x00\x00\x00",   # type 7
                                     b"\xc2\x04\x00\x00\x00\x00\x00",        # 7 bytes
                                     b"\xc3\x04" + bytes(30)])
def test_not_v2_off_port(payload):
    assert proto.classify(payload, 40000, 51000) is None
    assert not on_udp(payload, dport=51000).haslayer(L.CamexV2)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5])
def test_truncated_messages_dissect_without_raising(t):
    for n in range(8, 40):
        raw = bytes((0xC2, t)) + bytes(range(n - 2))
        pkt = on_udp(raw, dport=51000)
        assert pkt.haslayer(L.CamexV2)
        pkt.summary()
        assert bytes(pkt[L.CamexV2]) == raw


def test_trailing_bytes_after_fixed_messages_are_padding():
    raw = wire.pack_nosession(7) + b"junk"
    pkt = L.CamexV2(raw)
    assert pkt[L.CamexV2NoSession].index == 7 and pkt.haslayer(Padding)
    assert not pkt.haslayer(Raw)


def test_keylog_lines_and_errors(tmp_path):
    f = tmp_path / "keys.log"
    f.write_text("# camex key log\n\n" + "\n".join(VECTORS["keylog"]) + "\n")
    log = L.KeyLog.from_file(f)
    assert len(log) == 2  # four lines, each session direction logged by both ends
    assert all(log.has_index(int(line.split()[1], 16)) for line in VECTORS["keylog"])
    f.write_text("CAMEX_V2 3e753daa nothex\n")
    with pytest.raises(L.KeyLogError, match=r"keys.log:1: not a key log line"):
        L.KeyLog.from_file(f)


def test_keylog_tries_only_the_keys_of_the_receiver_index():
    v = next(v for v in of_type(wire.T_DATA) if v["opens"])
    other = L.KeyLog()
    # the right key under another index opens nothing: no trial of every key
    other.add(v["receiver_index"] ^ 1, KEYLOG.keys[v["receiver_index"]][0])
    assert other.open(h(v["bytes"])) is None
    # a second (wrong) key for the same index does not hide the right one
    other.add(v["receiver_index"], bytes(32))
    other.add(v["receiver_index"], KEYLOG.keys[v["receiver_index"]][0])
    assert other.open(h(v["bytes"])).plaintext == h(v["plaintext"])
