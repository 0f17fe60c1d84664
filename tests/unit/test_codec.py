"""The daemon's fast codec against the shared byte vectors and the captures.

tests/vectors/legacy.json is the one set of vectors that the Scapy layers'
tests check too; the captures in tests/vectors/captures are real traffic of
the C implementation.
"""

import json
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from camex.base.aead import ChaCha20Poly1305

from camex.legacy import codec
from camex.base.replay import ReplayWindow

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "legacy.json").read_text())
CAPTURES = Path(os.environ.get("CAMEX_VECTORS") or ROOT / "tests" / "vectors" / "captures")
PASSPHRASES = [b"demo-global-secret", b"per-client-secret-c2"]


def h(s):
    return bytes.fromhex(s)


@pytest.mark.parametrize("v", VECTORS["keys"], ids=lambda v: v["passphrase"])
def test_key_and_fingerprint(v):
    key = codec.derive_key(v["passphrase"].encode())
    assert key.hex() == v["key"]
    assert codec.fingerprint(key) == v["fingerprint"]


def test_spec_fingerprint_example():
    assert codec.fingerprint(codec.derive_key(b"demo-global-secret")) == \
        "beeba85739952129851313a1f979fafc"


@pytest.mark.parametrize("bad", [b"", b"x" * 64])
def test_passphrase_length_is_checked(bad):
    with pytest.raises(codec.CodecError):
        codec.derive_key(bad)


@pytest.mark.parametrize("v", VECTORS["control"], ids=lambda v: v["name"])
def test_control_vectors_parse(v):
    msg = codec.parse_control(h(v["bytes"]))
    assert msg.verb == v["verb"]
    assert [list(f) for f in msg.fields] == v["fields"]
    assert list(msg.bare) == v["bare"]
    if not v["bare"]:
        assert codec.format_control(msg.verb, msg.fields) == h(v["bytes"])


@pytest.mark.parametrize("v", VECTORS["encrypted"], ids=lambda v: v["name"])
def test_encrypted_vectors_seal_and_open(v):
    aead = ChaCha20Poly1305(codec.derive_key(v["passphrase"].encode()))
    dgram = h(v["datagram"])
    assert codec.seal(aead, v["type"], h(v["prefix"]), v["seq"], h(v["plaintext"])) == dgram
    hdr = codec.parse_header(dgram)
    assert (hdr.type, hdr.prefix.hex(), hdr.seq) == (v["type"], v["prefix"], v["seq"])
    assert codec.open_datagram(aead, dgram) == h(v["plaintext"])


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=lambda v: v["name"])
def test_malformed_vectors_are_rejected(v):
    with pytest.raises(codec.CodecError):
        codec.parse_header(h(v["datagram"]))


@pytest.mark.parametrize("v", VECTORS["tampered"], ids=lambda v: v["name"])
def test_tampered_vectors_fail_authentication(v):
    aead = ChaCha20Poly1305(codec.derive_key(v["passphrase"].encode()))
    dgram = h(v["datagram"])
    with pytest.raises((InvalidTag, codec.CodecError)):
        codec.open_datagram(aead, dgram)


def test_config_message_leaves_out_empty_fields_and_caps_routes():
    msg = codec.config_message("C9", None, "10.0.0.9/24", "10.0.0.1",
                               [f"10.{i}.0.0/16" for i in range(20)])
    parsed = codec.parse_control(msg)
    assert parsed.get("MTU") is None
    assert len(parsed.get_all("ROUTE_CIDR")) == codec.MAX_ROUTES


@pytest.mark.parametrize("bad", [b"CX2P\n", b"CX2P REGISTER A=" + b"x" * 64 + b"\n",
                                 b"CX2P REGISTER =x\n", b"CX2P REGISTER\nCX2P X\n",
                                 b"CX2P " + b"A" * 1100, b"CX2P REGISTER \xff\n"])
def test_bad_control_text(bad):
    with pytest.raises(codec.CodecError):
        codec.parse_control(bad)


def _capture_datagrams(path):
    """UDP payloads of a capture, IPv4 fragments reassembled (the C peer
    sent full-size packets that were fragmented outside)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet import defragment
    from scapy.utils import rdpcap

    packets = defragment([p for p in rdpcap(str(path)) if IP in p])
    return [bytes(p[UDP].payload) for p in packets if UDP in p]


# The captures hold only the first fragment of each fragmented datagram
# (their filter was `udp port 7000`), so only these many are complete.
COMPLETE = {"upstream-manual-enc.pcap": 106, "upstream-auto-enc.pcap": 113,
            "upstream-manual-plain.pcap": 104, "upstream-auto-plain.pcap": 116}


@pytest.mark.parametrize("name", ["upstream-manual-enc.pcap", "upstream-auto-enc.pcap"])
def test_every_encrypted_capture_datagram_authenticates(name):
    aeads = [ChaCha20Poly1305(codec.derive_key(p)) for p in PASSPHRASES]
    windows = {}
    datagrams = _capture_datagrams(CAPTURES / name)
    assert len(datagrams) == COMPLETE[name]
    opened = 0
    for d in datagrams:
        hdr = codec.parse_header(d)
        for aead in aeads:
            try:
                pt = codec.open_datagram(aead, d, hdr)
            except InvalidTag:
                continue
            break
        else:
            pytest.fail(f"no passphrase opens a datagram of {name}")
        assert len(pt) == hdr.length
        if hdr.type == codec.T_DATA:
            assert pt[0] >> 4 in (4, 6)
        else:
            codec.parse_control(pt)
        # Real traffic never replays: every (prefix, seq) is new.
        assert windows.setdefault(hdr.prefix, ReplayWindow()).accept(hdr.seq)
        opened += 1
    assert opened == len(datagrams)


@pytest.mark.parametrize("name", ["upstream-manual-plain.pcap", "upstream-auto-plain.pcap"])
def test_every_plaintext_capture_datagram_classifies(name):
    datagrams = _capture_datagrams(CAPTURES / name)
    assert len(datagrams) == COMPLETE[name]
    controls = 0
    for d in datagrams:
        if codec.is_control(d):
            codec.parse_control(d)
            controls += 1
        else:
            assert d[0] >> 4 in (4, 6)
    assert controls >= 4


def test_replay_window_semantics():
    w = ReplayWindow(64)
    assert w.accept(0) and not w.accept(0)
    assert w.accept(100)
    assert not w.check(36)  # 64 below the highest
    assert w.accept(37) and not w.accept(37)
    assert w.accept(99) and w.accept(101)
    assert not w.check(100)


def test_replay_window_check_does_not_update():
    w = ReplayWindow(2048)
    for _ in range(3):
        assert w.check(5)
    w.update(5)
    assert not w.check(5)
    w.update(5000)
    assert not w.check(5000 - 2048) and w.check(5000 - 2047)


def test_replay_window_survives_a_huge_jump():
    w = ReplayWindow(64)
    assert w.accept(3)
    assert w.accept(2**64 - 1)
    assert not w.check(2**64 - 1) and not w.check(3)
    assert w.accept(2**64 - 2)
