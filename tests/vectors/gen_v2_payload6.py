"""Regenerate tests/vectors/v2_payload6.json (a development tool, not a test).

    .venv/bin/python tests/vectors/gen_v2_payload6.py

Handshake payloads (docs/PROTOCOL.md §4.6) of both payload versions: the
version-1 ones camex sent before IPv6 inside the tunnel, and version-2 ones
with the VERSION, LOCAL_CIDR6, GATEWAY_IP6 and ROUTE_CIDR6 items. Built
here straight from the table in §4.6 with struct and ipaddress, WITHOUT
camex.v2.wire: the daemon's codec and the Scapy layer are both checked
against these bytes (tests/unit/test_v2_payload6.py), which also fails if
this script's output and the committed JSON drift apart.

Each vector says what a version-2 decoder reads (`reads`) and what a
version-1 decoder reads (`v1_reads`: the IPv4 part only, as the new items
are types it skips).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "v2_payload6.json"

MODE, LOCAL, GW, ROUTE, MTU, ERROR, FEATURES = 1, 2, 3, 4, 5, 6, 7
VERSION, LOCAL6, GW6, ROUTE6 = 8, 9, 10, 11


def tlv(t: int, v: bytes) -> bytes:
    return bytes((t, len(v))) + v


def cidr(text: str) -> bytes:
    i = ipaddress.ip_interface(text)
    return i.ip.packed + bytes((i.network.prefixlen,))


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def fields(**kw) -> dict:
    base = {"auto": None, "version": 1, "features": 0, "local_cidr": None,
            "local_cidr6": None, "gateway_ip": None, "gateway_ip6": None,
            "routes": [], "mtu": None}
    base.update(kw)
    return base


VECTORS = [
    {"name": "init-v1-manual", "message": "INIT",
     "bytes": tlv(MODE, b"\0") + tlv(LOCAL, cidr("10.0.0.2/24")) + tlv(FEATURES, b"\1"),
     "reads": fields(auto=False, local_cidr="10.0.0.2/24", features=1),
     "v1_reads": fields(auto=False, local_cidr="10.0.0.2/24", features=1)},
    {"name": "init-v2-auto", "message": "INIT",
     "bytes": tlv(MODE, b"\1") + tlv(FEATURES, b"\1") + tlv(VERSION, b"\2"),
     "reads": fields(auto=True, features=1, version=2),
     "v1_reads": fields(auto=True, features=1)},
    {"name": "init-v2-manual-dual", "message": "INIT",
     "bytes": tlv(MODE, b"\0") + tlv(LOCAL, cidr("10.0.0.2/24")) + tlv(FEATURES, b"\1")
     + tlv(VERSION, b"\2") + tlv(LOCAL6, cidr("fd00:c::2/64")),
     "reads": fields(auto=False, local_cidr="10.0.0.2/24", local_cidr6="fd00:c::2/64",
                     features=1, version=2),
     "v1_reads": fields(auto=False, local_cidr="10.0.0.2/24", features=1)},
    {"name": "init-v2-manual-v6only", "message": "INIT",
     "bytes": tlv(MODE, b"\0") + tlv(MTU, (1400).to_bytes(2, "big")) + tlv(VERSION, b"\2")
     + tlv(LOCAL6, cidr("2001:db8:c::2/64")),
     "reads": fields(auto=False, local_cidr6="2001:db8:c::2/64", mtu=1400, version=2),
     "v1_reads": fields(auto=False, mtu=1400)},
    {"name": "resp-v1-auto", "message": "RESP",
     "bytes": tlv(LOCAL, cidr("10.0.0.2/24")) + tlv(GW, addr("10.0.0.1"))
     + tlv(ROUTE, cidr("10.251.0.0/24")) + tlv(MTU, (1400).to_bytes(2, "big"))
     + tlv(FEATURES, b"\1"),
     "reads": fields(local_cidr="10.0.0.2/24", gateway_ip="10.0.0.1",
                     routes=["10.251.0.0/24"], mtu=1400, features=1),
     "v1_reads": fields(local_cidr="10.0.0.2/24", gateway_ip="10.0.0.1",
                        routes=["10.251.0.0/24"], mtu=1400, features=1)},
    {"name": "resp-v2-dual", "message": "RESP",
     "bytes": tlv(LOCAL, cidr("10.0.0.2/24")) + tlv(GW, addr("10.0.0.1"))
     + tlv(ROUTE, cidr("10.251.0.0/24")) + tlv(MTU, (1400).to_bytes(2, "big"))
     + tlv(FEATURES, b"\1") + tlv(VERSION, b"\2") + tlv(LOCAL6, cidr("fd00:c::2/64"))
     + tlv(GW6, addr("fd00:c::1")) + tlv(ROUTE6, cidr("fd00:251::/48"))
     + tlv(ROUTE6, cidr("2001:db8:77::/48")),
     "reads": fields(local_cidr="10.0.0.2/24", gateway_ip="10.0.0.1",
                     routes=["10.251.0.0/24", "fd00:251::/48", "2001:db8:77::/48"],
                     mtu=1400, features=1, version=2, local_cidr6="fd00:c::2/64",
                     gateway_ip6="fd00:c::1"),
     "v1_reads": fields(local_cidr="10.0.0.2/24", gateway_ip="10.0.0.1",
                        routes=["10.251.0.0/24"], mtu=1400, features=1)},
    {"name": "resp-v2-v6only", "message": "RESP",
     "bytes": tlv(MTU, (1400).to_bytes(2, "big")) + tlv(FEATURES, b"\1") + tlv(VERSION, b"\2")
     + tlv(LOCAL6, cidr("fd00:c::6/64")) + tlv(GW6, addr("fd00:c::1"))
     + tlv(ROUTE6, cidr("fd00:251::/48")),
     "reads": fields(local_cidr6="fd00:c::6/64", gateway_ip6="fd00:c::1",
                     routes=["fd00:251::/48"], mtu=1400, features=1, version=2),
     "v1_reads": fields(mtu=1400, features=1)},
    {"name": "resp-v2-manual", "message": "RESP",
     "bytes": tlv(FEATURES, b"\1") + tlv(VERSION, b"\2"),
     "reads": fields(features=1, version=2),
     "v1_reads": fields(features=1)},
]

FIELDS = {
    "payloads[].name": "short name",
    "payloads[].message": "INIT (the request) or RESP (the configuration, after the index)",
    "payloads[].bytes": "hex, the decrypted payload: TLVs type u8 | length u8 | value",
    "payloads[].reads": "what a version-2 decoder reads: auto (INIT only), version (1 without "
                        "a VERSION item), features, local_cidr, local_cidr6, gateway_ip, "
                        "gateway_ip6, routes (IPv4 first, in order), mtu",
    "payloads[].v1_reads": "what a version-1 decoder reads from the same bytes",
}


def build() -> dict:
    out = []
    for v in VECTORS:
        v = dict(v)
        v["bytes"] = v["bytes"].hex()
        for key in ("reads", "v1_reads"):
            if v["message"] == "RESP":
                v[key] = {k: x for k, x in v[key].items() if k != "auto"}
        out.append(v)
    return {"about": "camex v2 handshake payloads, versions 1 and 2 (docs/PROTOCOL.md §4.6)",
            "fields": FIELDS, "payloads": out}


def main() -> int:
    text = json.dumps(build(), indent=1) + "\n"
    if sys.argv[1:] == ["--check"]:
        return 0 if OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
