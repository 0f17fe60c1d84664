"""The shared v2 vectors (tests/vectors/v2.json) against the daemon's wire
module: camex.v2.wire parses every datagram into the fields decoded from
the spec, and its pack functions rebuild the same bytes. The Scapy layers
are checked against the same file in test_proto_v2_layers.py."""

import json
from pathlib import Path

import pytest

from camex.v2 import wire
from camex.v2.noise import nonce_bytes

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/v2.json").read_text())
PSK = bytes.fromhex(VECTORS["psk"])
KEYS = {int(line.split()[1], 16): bytes.fromhex(line.split()[2]) for line in VECTORS["keylog"]}
ALL = VECTORS["datagrams"]


def of_type(t):
    return [v for v in ALL if v["type"] == t]


def ids(vs):
    return [v["name"] for v in vs]


def test_vectors_cover_every_message_and_flag():
    assert {v["type"] for v in ALL} == {1, 2, 3, 4, 5}
    assert {v["flags"] for v in of_type(wire.T_DATA)} == {0, wire.FLAG_CLOSE, wire.FLAG_REKEY}
    assert any(v["cookie"] for v in of_type(wire.T_INIT))        # an INIT with mac2
    assert any(not v["opens"] for v in of_type(wire.T_DATA))     # a DATA no key opens
    assert any(len(v.get("packets", [])) == 2 for v in of_type(wire.T_DATA))


def test_vectors_are_what_the_generator_makes_now():
    """The committed JSON is current: memlab's sample traffic and the
    generator still agree with it (regenerate with tests/vectors/gen_v2.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_v2", ROOT / "tests/vectors/gen_v2.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build() == VECTORS, ("tests/vectors/v2.json is stale: memlab.sample_traffic "
                                    "changed; run .venv/bin/python tests/vectors/gen_v2.py")


@pytest.mark.parametrize("v", ALL, ids=ids(ALL))
def test_is_v2_and_type(v):
    d = bytes.fromhex(v["bytes"])
    assert wire.is_v2(d) and wire.msg_type(d) == v["type"]


@pytest.mark.parametrize("v", of_type(wire.T_INIT), ids=ids(of_type(wire.T_INIT)))
def test_init_parse_and_pack(v):
    d = bytes.fromhex(v["bytes"])
    init = wire.parse_init(d)
    assert init.sender == v["sender_index"] and init.client_id == v["client_id"]
    assert init.noise == bytes.fromhex(v["ephemeral"] + v["encrypted_payload"])
    assert (init.mac1.hex(), init.mac2.hex()) == (v["mac1"], v["mac2"])
    assert v["mac1_valid"]
    cookie = bytes.fromhex(v["cookie"]) if v["cookie"] else None
    head = wire.init_head(v["sender_index"], v["client_id"])
    assert wire.pack_init(head, init.noise, wire.mac1_key(PSK), cookie) == d


@pytest.mark.parametrize("v", of_type(wire.T_RESP), ids=ids(of_type(wire.T_RESP)))
def test_resp_parse_and_pack(v):
    d = bytes.fromhex(v["bytes"])
    r = wire.parse_resp(d)
    assert r.receiver == v["receiver_index"] and r.mac1.hex() == v["mac1"]
    assert r.noise == bytes.fromhex(v["ephemeral"] + v["encrypted_payload"])
    assert wire.pack_resp(v["receiver_index"], r.noise, wire.mac1_key(PSK)) == d


@pytest.mark.parametrize("v", of_type(wire.T_COOKIE), ids=ids(of_type(wire.T_COOKIE)))
def test_cookie_parse_and_pack(v):
    d = bytes.fromhex(v["bytes"])
    receiver, nonce, sealed = wire.parse_cookie(d)
    assert (receiver, nonce.hex(), sealed.hex()) == (v["receiver_index"], v["nonce"],
                                                     v["encrypted_cookie"])
    assert wire.pack_cookie(receiver, nonce, sealed) == d


@pytest.mark.parametrize("v", of_type(wire.T_DATA), ids=ids(of_type(wire.T_DATA)))
def test_data_parse_pack_and_open(v):
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    d = bytes.fromhex(v["bytes"])
    assert wire.parse_data_header(d) == (v["flags"], v["receiver_index"], v["counter"])
    head = wire.data_header(v["receiver_index"], v["counter"], v["flags"])
    assert head + bytes.fromhex(v["ciphertext"] + v["tag"]) == d
    if v["opens"]:
        plain = ChaCha20Poly1305(KEYS[v["receiver_index"]]).decrypt(
            nonce_bytes(v["counter"]), d[16:], head)
        assert [p.hex() for p in wire.parse_records(plain)] == v["packets"]
        if not v["padding"]:
            assert wire.pack_records([bytes.fromhex(p) for p in v["packets"]]) == plain
    else:
        assert v["receiver_index"] not in KEYS


@pytest.mark.parametrize("v", of_type(wire.T_NOSESSION), ids=ids(of_type(wire.T_NOSESSION)))
def test_nosession_parse_and_pack(v):
    d = bytes.fromhex(v["bytes"])
    assert wire.parse_nosession(d) == v["index"]
    assert wire.pack_nosession(v["index"]) == d
