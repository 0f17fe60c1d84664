"""The Scapy layers agree byte for byte with the shared vectors (tests/vectors/legacy.json).

The same file drives the codec tests, so layers and codec are held to one
set of independent bytes: spec-derived ones and datagrams of the C peer.
"""

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from camex import proto
from camex.legacy import codec
from camex.proto import (CX2PControl, CX2PEncrypted, CX2PSealed, KeyRing,
                         LegacyKey, NoKeyError)
from camex.proto.legacy import SEALED_CLASSES

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "legacy.json").read_text())
CONTROL = VECTORS["control"]
ENCRYPTED = VECTORS["encrypted"]


def ids(entries):
    return [e["name"] for e in entries]


def test_vector_file_covers_spec_and_captures():
    sources = {e["source"].split("#")[0] for e in ENCRYPTED}
    assert {"spec", "upstream-auto-enc.pcap", "upstream-manual-enc.pcap"} <= sources
    assert {e["type"] for e in ENCRYPTED} == {1, 2, 3}
    assert {e["verb"] for e in CONTROL} == {"REGISTER", "CONFIG"}


@pytest.mark.parametrize("k", VECTORS["keys"], ids=lambda k: k["passphrase"][:20])
def test_key_and_fingerprint(k):
    lk = LegacyKey.from_passphrase(k["passphrase"])
    assert lk.key.hex() == k["key"]
    assert codec.fingerprint(lk.key) == k["fingerprint"]


def test_spec_fingerprint_example():
    key = LegacyKey.from_passphrase("demo-global-secret").key
    assert codec.fingerprint(key) == "beeba85739952129851313a1f979fafc"


@pytest.mark.parametrize("v", CONTROL, ids=ids(CONTROL))
def test_control_dissects_and_rebuilds(v):
    raw = bytes.fromhex(v["bytes"])
    pkt = CX2PControl(raw)
    assert bytes(pkt) == raw
    assert pkt.verb == v["verb"].encode()
    body = pkt.payload
    assert body.pairs() == [tuple(f) for f in v["fields"]]
    assert [p.key.decode() for p in body.params if not p.eq] == v["bare"]
    expected_cls = {"REGISTER": proto.CX2PRegister, "CONFIG": proto.CX2PConfig}[v["verb"]]
    assert type(body) is expected_cls
    # the codec reads the same fields from the same bytes
    parsed = codec.parse_control(raw)
    assert parsed.verb == v["verb"] and list(parsed.fields) == [tuple(f) for f in v["fields"]]


@pytest.mark.parametrize("v", CONTROL, ids=ids(CONTROL))
def test_control_built_from_fields_equals_vector(v):
    cls = {"REGISTER": proto.CX2PRegister, "CONFIG": proto.CX2PConfig}[v["verb"]]
    pairs = [tuple(f) for f in v["fields"]] + [(b, None) for b in v["bare"]]
    built = bytes(CX2PControl() / cls(params=proto.params(*pairs)))
    assert built == bytes.fromhex(v["bytes"])
    if not v["bare"]:
        assert built == codec.format_control(v["verb"], [tuple(f) for f in v["fields"]])


@pytest.mark.parametrize("v", ENCRYPTED, ids=ids(ENCRYPTED))
def test_encrypted_layer_build_equals_vector(v):
    wire = bytes.fromhex(v["datagram"])
    ct_tag = wire[codec.HEADER_LEN:]
    built = CX2PEncrypted(type=v["type"], prefix=bytes.fromhex(v["prefix"]), seq=v["seq"]) / \
        SEALED_CLASSES[v["type"]](ciphertext=ct_tag[:-16], tag=ct_tag[-16:])
    assert bytes(built) == wire
    # sealing through the layer helper gives the same bytes as the vector
    plaintext = bytes.fromhex(v["plaintext"])
    sealed = proto.seal(plaintext, v["passphrase"], bytes.fromhex(v["prefix"]), v["seq"],
                        ptype=v["type"])
    assert bytes(sealed) == wire


@pytest.mark.parametrize("v", ENCRYPTED, ids=ids(ENCRYPTED))
def test_encrypted_vector_dissects_and_decrypts(v):
    wire = bytes.fromhex(v["datagram"])
    pkt = CX2PEncrypted(wire)
    assert (pkt.type, pkt.prefix.hex(), pkt.seq, pkt.nonce_seq, pkt.length) == \
        (v["type"], v["prefix"], v["seq"], v["seq"], len(v["plaintext"]) // 2)
    assert type(pkt.payload) is SEALED_CLASSES[v["type"]]
    assert bytes(pkt) == wire
    ring = KeyRing(["not-this-one", v["passphrase"]])
    opened = ring.open(wire)
    assert opened.plaintext.hex() == v["plaintext"]
    assert opened.key.key == LegacyKey.from_passphrase(v["passphrase"]).key
    inner = proto.decrypt(pkt, ring)
    assert bytes(inner).hex() == v["plaintext"]
    if v["type"] != codec.T_DATA:
        assert isinstance(inner, CX2PControl)
    elif v["plaintext"][:1] == "4":
        assert isinstance(inner, IP)


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=ids(VECTORS["malformed"]))
def test_malformed_rejected_but_dissectable(v):
    wire = bytes.fromhex(v["datagram"])
    with pytest.raises(codec.CodecError):
        KeyRing(["demo-global-secret"]).open(wire)
    # the layer still shows it, and rebuilds it as it was
    pkt = IP() / UDP(sport=40000, dport=7000) / Raw(wire)
    pkt = IP(bytes(pkt))
    assert bytes(pkt[UDP].payload) == wire


@pytest.mark.parametrize("v", VECTORS["tampered"], ids=ids(VECTORS["tampered"]))
def test_tampered_not_opened(v):
    wire = bytes.fromhex(v["datagram"])
    with pytest.raises(NoKeyError):
        KeyRing([v["passphrase"]]).open(wire)
    with pytest.raises(NoKeyError):
        proto.decrypt(CX2PEncrypted(wire), v["passphrase"])
    assert isinstance(CX2PEncrypted(wire).payload, CX2PSealed)
