"""Handshake payload version 2 (IPv6 inside the tunnel) against the
vectors of tests/vectors/v2_payload6.json: the daemon's codec
(camex.v2.wire) and the Scapy layer (camex.proto) read the same bytes the
same way and build them back; a version-1 payload still decodes; a
version-1 decoder (tests/support/payload_v1.py) given a version-2 payload
reads its IPv4 part and nothing else, as docs/PROTOCOL.md §4.6 says."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from camex.proto import v2_payload as P
from camex.v2 import wire
from tests.support import payload_v1

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/v2_payload6.json").read_text())["payloads"]
IDS = [v["name"] for v in VECTORS]


def _s(x):
    """ipaddress objects as text, the rest as it is."""
    return x if x is None or isinstance(x, (bool, int)) else str(x)


def _wire_reads(v) -> dict:
    raw = bytes.fromhex(v["bytes"])
    if v["message"] == "INIT":
        r = wire.decode_request(raw)
        return {"auto": r.auto, "version": r.version, "features": r.features,
                "local_cidr": _s(r.local_cidr), "local_cidr6": _s(r.local_cidr6),
                "mtu": r.mtu}
    c = wire.decode_config(raw)
    return {"version": c.version, "features": c.features, "local_cidr": _s(c.local_cidr),
            "local_cidr6": _s(c.local_cidr6), "gateway_ip": _s(c.gateway_ip),
            "gateway_ip6": _s(c.gateway_ip6), "routes": [str(r) for r in c.routes],
            "mtu": c.mtu}


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_the_codec_reads_and_builds_the_vectors(v):
    want = {k: x for k, x in v["reads"].items() if k in _wire_reads(v)}
    assert _wire_reads(v) == want
    raw = bytes.fromhex(v["bytes"])
    if v["message"] == "INIT":
        assert wire.encode_request(wire.decode_request(raw)) == raw
    else:
        assert wire.encode_config(wire.decode_config(raw)) == raw


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_the_scapy_layer_reads_and_builds_the_vectors(v):
    raw = bytes.fromhex(v["bytes"])
    pl = P.CamexV2Payload(raw)
    assert bytes(pl) == raw and not pl.stray
    assert not [t for t in pl.tlvs if type(t) is P.CamexV2Tlv]   # every item known
    reads = v["reads"]
    assert pl.version() == reads["version"]
    assert (pl.features() or 0) == reads["features"]
    six = pl.get(wire.TLV_LOCAL_CIDR6)
    assert [f"{t.address}/{t.prefix}" for t in six] == \
        ([str(ipaddress.ip_interface(reads["local_cidr6"]))] if reads["local_cidr6"] else [])
    gw6 = [str(t.address) for t in pl.get(wire.TLV_GATEWAY6)]
    assert gw6 == ([reads["gateway_ip6"]] if reads.get("gateway_ip6") else [])
    routes = [f"{t.network}/{t.prefix}" for t in pl.get(wire.TLV_ROUTE) + pl.get(wire.TLV_ROUTE6)]
    assert routes == reads.get("routes", [])
    if reads["local_cidr6"]:
        assert f"LOCAL_CIDR6 {reads['local_cidr6']}" in pl.summary()


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_a_version_1_decoder_reads_the_ipv4_part_only(v):
    raw = bytes.fromhex(v["bytes"])
    old = (payload_v1.decode_request(raw) if v["message"] == "INIT"
           else payload_v1.decode_config(raw))
    assert old is not None    # never "malformed": the new items are skipped
    want = v["v1_reads"]
    got = {k: (_s(x) if not isinstance(x, list) else [str(r) for r in x])
           for k, x in old.items()}
    assert got == {k: x for k, x in want.items() if k in got}


def test_layers_build_what_the_codec_builds():
    cfg = wire.Config(local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"),
                      gateway_ip=ipaddress.IPv4Address("10.0.0.1"),
                      routes=[ipaddress.ip_network("10.251.0.0/24"),
                              ipaddress.ip_network("fd00:251::/48"),
                              ipaddress.ip_network("2001:db8:77::/48")],
                      mtu=1400, features=1, version=2,
                      local_cidr6=ipaddress.IPv6Interface("fd00:c::2/64"),
                      gateway_ip6=ipaddress.IPv6Address("fd00:c::1"))
    built = P.payload(P.CamexV2TlvLocalCidr(address="10.0.0.2", prefix=24),
                      P.CamexV2TlvGateway(address="10.0.0.1"),
                      P.CamexV2TlvRoute(network="10.251.0.0", prefix=24),
                      P.CamexV2TlvMtu(mtu=1400), P.CamexV2TlvFeatures(features=1),
                      P.CamexV2TlvVersion(version=2),
                      P.CamexV2TlvLocalCidr6(address="fd00:c::2", prefix=64),
                      P.CamexV2TlvGateway6(address="fd00:c::1"),
                      P.CamexV2TlvRoute6(network="fd00:251::", prefix=48),
                      P.CamexV2TlvRoute6(network="2001:db8:77::", prefix=48))
    want = next(v for v in VECTORS if v["name"] == "resp-v2-dual")
    assert bytes(built) == wire.encode_config(cfg) == bytes.fromhex(want["bytes"])


def test_a_version_1_config_carries_no_ipv6():
    """A server answering a version-1 client builds a version-1 payload:
    the bytes it always sent, whatever the grant holds."""
    cfg = wire.Config(local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"),
                      gateway_ip=ipaddress.IPv4Address("10.0.0.1"),
                      routes=[ipaddress.ip_network("10.251.0.0/24"),
                              ipaddress.ip_network("fd00:251::/48")], mtu=1400,
                      local_cidr6=ipaddress.IPv6Interface("fd00:c::2/64"))
    want = next(v for v in VECTORS if v["name"] == "resp-v1-auto")
    assert wire.encode_config(cfg, features=1) == bytes.fromhex(want["bytes"])


@pytest.mark.parametrize("raw", [
    bytes((9, 17)) + ipaddress.ip_address("::ffff:10.0.0.2").packed + b"\x40",   # v4-mapped
    bytes((9, 17)) + ipaddress.ip_address("fe80::2").packed + b"\x40",           # link-local
    bytes((9, 17)) + ipaddress.ip_address("fd00::2").packed + b"\x81",           # prefix 129
    bytes((9, 5)) + bytes(5),                                                    # IPv4 length
    bytes((10, 4)) + bytes(4),
])
def test_bad_ipv6_items_make_the_payload_malformed(raw):
    assert wire.decode_config(raw) is None
    pl = P.CamexV2Payload(raw)
    assert bytes(pl) == raw


def test_the_generator_matches_the_committed_json():
    r = subprocess.run([sys.executable, str(ROOT / "tests/vectors/gen_v2_payload6.py"),
                        "--check"], cwd=ROOT)
    assert r.returncode == 0
